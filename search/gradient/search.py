"""The gradient search's loop (``Search``) behind ``proxyless search warmup`` / ``run``: the ProxylessNAS schedule.

1. Warm-up: weights train on paths sampled uniformly (zero op included); alpha is not touched.
2. Search: every batch is a weight step on one path sampled from softmax(alpha); every ``arch_every`` batches an
   alpha step on a batch of the held-out, class-balanced validation split (ProxylessNAS-G gates or REINFORCE),
   except in the first ``arch_skip_epochs`` search epochs. The defaults are the authors': Adam (lr 1e-3, betas
   0 and 0.999) every 5 weight steps, none in the first search epoch; the loss ``mul#ratio`` (objective.py).
3. Derivation: argmax per layer (zero = skip the layer), written as an ArchSpec with its predicted latency; where
   the argmax exceeds the target latency, the most probable path within it (derive.py). With it, a
   convergence report (search_log.py): entropy per layer and epoch, argmax changes, near-ties (warned).

Reproducibility: the paths of step s come from a generator seeded by (seed, s), the data position is the loader's
(epoch, batch), so a run resumed from its checkpoint replays exactly what an uninterrupted run does. Under
``torchrun`` every rank samples the same paths; weight gradients of the sampled path and alpha gradients are
averaged over ranks by hand (one all-reduce each), so weights and alpha stay identical; only rank 0 writes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from search.elastic.store import load_supernet, resolve_supernet
from search.gradient.config import RESUMABLE, SearchConfig, SearchError, run_command, warmup_command
from search.gradient.gates import frozen_bn_stats, plan_gates, rescale_pairs, sample_paths
from search.gradient.objective import LatencyObjective
from search.gradient.reinforce import Reinforce
from search.gradient.search_log import SearchLog, convergence, layer_entropy, op_label
from search.gradient.supernet import Supernet
from search.gradient.warm_start import WarmStartError, init_from_elastic
from search.latency import LatencyModel, load_latency_model
from search.space import get_space
from search.training import distributed as D
from search.training.data import NO_AUGMENT, Augment, TensorLoader, build_train_data
from search.training.distributed import allreduce_mean_, mix_seed
from search.training.schedule import cosine
from zoo.files import atomic_write, verify_checksum, write_checksummed
from zoo.weights import WeightsError

CKPT_FORMAT = "proxyless-search-ckpt/1"
SPLIT_SEED = 0  # the validation split is the same for every run, whatever its seed


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """The CPU generator of one step's sampling: the same on every rank and after a resume."""
    return torch.Generator().manual_seed(mix_seed(seed, step, stream))


@contextmanager
def frozen(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Weights out of autograd during an alpha step: no weight gradients, and convs keep no inputs for them."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class Search:
    """One run (warm-up only when ``cfg.algo`` is None): build, resume or start, train, derive."""

    def __init__(self, cfg: SearchConfig, latency: LatencyModel | None = None) -> None:
        cfg.validate()
        self.cfg, self.out = cfg, Path(cfg.out)
        self.device = D.init_distributed(cfg.device)
        self.main = D.is_main()
        self.space = get_space(cfg.space)
        self.latency = latency
        if self.latency is None and cfg.algo is not None:
            self.latency = load_latency_model(cfg.lut or cfg.target, self.space)
        torch.manual_seed(cfg.seed)
        self.net = Supernet(self.space)
        self.net.init_alpha(cfg.alpha_init_std, torch.Generator().manual_seed(mix_seed(cfg.seed, 1)))
        self.net.to(self.device)
        if cfg.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.weights = list(self.net.weight_parameters())
        self.wopt = torch.optim.SGD(
            self.weights, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
        )
        self.aopt = torch.optim.Adam([self.net.alpha], lr=cfg.arch_lr, betas=(0.0, 0.999), eps=1e-8)
        self.objective = None
        if cfg.algo is not None:
            matrix, fixed = self.latency.candidate_matrix(self.space)
            self.objective = LatencyObjective(
                matrix,
                fixed,
                cfg.target_latency,
                cfg.loss,
                cfg.reg_scale,
                cfg.reg_beta,
                cfg.reg_lambda,
                self.latency.unit,
                cfg.ratio_beta,
                cfg.ratio_beta_over,
            ).to(self.device)
        self.rl = Reinforce(cfg.rl_samples, cfg.rl_tradeoff, cfg.rl_baseline_decay)
        self._build_data()
        self.epoch = self.step = self.alpha_steps = 0
        self.stats = self._zero_stats()
        self.history: list[dict[str, Any]] = []
        self.done = False
        self.warmup_command: str | None = None  # with --init-from: the command that reruns that warm-up
        self._load_start()
        self.probs_cpu = self.net.probs().detach().cpu()
        self.uniform_cpu = self.net.valid.float().cpu()
        self.log = None
        self.op_labels = [[op_label(b) for b in cands] for cands in self.net.candidates]
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.log = SearchLog(self.out, self.op_labels, cfg.tensorboard, len(self.history))

    # ------------------------------------------------------------------ setup

    def _build_data(self) -> None:
        cfg = self.cfg
        data = build_train_data(
            cfg.dataset,
            cfg.data_dir,
            cfg.batch_size,
            input_size=self.space.input_size,
            device=self.device,
            augment=Augment(),
            seed=cfg.seed,
            val_size=cfg.val_size,
            split_seed=SPLIT_SEED,
            limit_train=cfg.limit_train,
            eval_batch_size=cfg.val_batch_size,
            rank=dist.get_rank() if D.is_dist() else 0,
            world=D.world_size(),
            channels_last=cfg.channels_last,
        )
        if data.channels != self.space.in_chans:
            raise SearchError(
                f"dataset {cfg.dataset} has {data.channels} channels, space {cfg.space} expects {self.space.in_chans}"
            )
        self.train = data.train
        self.val_iter: Iterator | None = None
        self.val = None
        if cfg.algo is None:  # a warm-up holds the split out too, so that its weights never see it
            return
        # alpha steps draw shuffled, unaugmented batches of the held-out split, cycling through it
        self.val = TensorLoader(
            data.val.images,
            data.val.labels,
            cfg.val_batch_size,
            data.mean,
            data.std,
            device=self.device,
            train=True,
            augment=NO_AUGMENT,
            input_size=self.space.input_size,
            seed=mix_seed(cfg.seed, 2),
            rank=dist.get_rank() if D.is_dist() else 0,
            world=D.world_size(),
            channels_last=cfg.channels_last,
        )

    def _zero_stats(self) -> dict[str, torch.Tensor]:
        keys = ("train_loss", "train_correct", "train_n", "val_ce", "val_correct", "val_n", "rl_reward", "rl_n")
        return {k: torch.zeros((), device=self.device) for k in keys}

    def _load_start(self) -> None:
        cfg, ckpt_path = self.cfg, self.out / "checkpoint.pt"
        if cfg.resume:
            if not ckpt_path.is_file():
                raise SearchError(f"--resume: no checkpoint at {ckpt_path}")
            self._restore(self._read(ckpt_path))
        elif ckpt_path.exists():
            raise SearchError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
        elif cfg.init_from:
            self._init_from(Path(cfg.init_from))
        elif cfg.init_elastic:
            self._init_elastic(cfg.init_elastic)

    def _read(self, path: Path) -> dict[str, Any]:
        verify_checksum(path)
        try:
            ckpt = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:  # a truncated or foreign file: say which
            raise SearchError(f"cannot read checkpoint {path}: {e}") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
            raise SearchError(f"{path} is not a search checkpoint ({CKPT_FORMAT})")
        return ckpt

    def _init_from(self, path: Path) -> None:
        """Start the search from a shared warm-up's weights (alpha and optimizers start fresh)."""
        ckpt = self._read(path)
        theirs = ckpt["config"]
        for key in ("space", "dataset", "val_size"):
            if theirs[key] != getattr(self.cfg, key):
                raise SearchError(
                    f"--init-from {path}: it has {key}={theirs[key]!r}, this run {getattr(self.cfg, key)!r}"
                )
        if not ckpt["done"]:
            raise SearchError(f"--init-from {path}: that warm-up did not finish (resume it first)")
        state = {k: v for k, v in ckpt["model"].items() if k != "alpha"}
        self.net.load_state_dict({**state, "alpha": self.net.alpha.detach()}, strict=True)
        self.warmup_command = warmup_command(theirs, path.parent)

    def _init_elastic(self, source: str) -> None:
        """Start every candidate from a trained elastic supernet's weights (warm_start.py)."""
        try:
            elastic, _ = load_supernet(resolve_supernet(None if source == "bundled" else source, self.cfg.space))
            init_from_elastic(self.net, elastic)
        except (WeightsError, WarmStartError) as e:
            raise SearchError(f"--init-elastic {source}: {e}") from None

    def _restore(self, ckpt: dict[str, Any]) -> None:
        mine = {k: v for k, v in asdict(self.cfg).items() if k not in RESUMABLE}
        theirs = {k: v for k, v in ckpt["config"].items() if k not in RESUMABLE}
        diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if diff:
            raise SearchError(f"--resume: settings differ from the checkpoint's: {', '.join(diff)}")
        self.net.load_state_dict(ckpt["model"], strict=True)
        self.wopt.load_state_dict(ckpt["weight_opt"])
        self.aopt.load_state_dict(ckpt["alpha_opt"])
        self.train.load_state_dict(ckpt["train_loader"])
        if self.val is not None:
            self.val.load_state_dict(ckpt["val_loader"])
        c = ckpt["counters"]
        self.epoch, self.step, self.alpha_steps, self.done = c["epoch"], c["step"], c["alpha_steps"], ckpt["done"]
        self.rl.baseline = ckpt["rl_baseline"]
        self.stats = {k: torch.tensor(v, device=self.device) for k, v in ckpt["stats"].items()}
        self.history = ckpt["history"]
        self.warmup_command = ckpt.get("warmup_command")  # absent in checkpoints written before it was kept
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if self.device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), self.device)

    def _save(self) -> None:
        D.average_buffers(self.net)  # BN statistics: the same on every rank before anyone writes
        if not self.main:
            return
        ckpt = {
            "format": CKPT_FORMAT,
            "config": asdict(self.cfg),
            "model": self.net.state_dict(),
            "weight_opt": self.wopt.state_dict(),
            "alpha_opt": self.aopt.state_dict(),
            "train_loader": self.train.state_dict(),
            "val_loader": self.val.state_dict() if self.val is not None else None,
            "counters": {"epoch": self.epoch, "step": self.step, "alpha_steps": self.alpha_steps},
            "done": self.done,
            "rl_baseline": self.rl.baseline,
            "stats": {k: float(v) for k, v in self.stats.items()},
            "history": self.history,
            "warmup_command": self.warmup_command,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            },
        }
        write_checksummed(self.out / "checkpoint.pt", lambda f: torch.save(ckpt, f))

    # ------------------------------------------------------------------ steps

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp)

    def _lr(self, warm: bool, batch: int) -> float:
        n = len(self.train)
        if warm:
            return self.cfg.warmup_lr * cosine((self.epoch * n + batch) / max(self.cfg.warmup_epochs * n, 1))
        return self.cfg.lr * cosine(((self.epoch - self.cfg.warmup_epochs) * n + batch) / max(self.cfg.epochs * n, 1))

    def weight_step(self, x: torch.Tensor, y: torch.Tensor, lr: float, warm: bool) -> None:
        """One path (uniform in warm-up, else from softmax(alpha)); only its weights get gradients."""
        path = sample_paths(self.uniform_cpu if warm else self.probs_cpu, step_generator(self.cfg.seed, self.step, 0))
        with self._autocast():
            out = self.net(x, path)
            loss = F.cross_entropy(out, y, label_smoothing=self.cfg.label_smoothing)
        self.wopt.zero_grad(set_to_none=True)  # None, not zero: SGD skips unsampled candidates entirely
        loss.backward()
        allreduce_mean_([p.grad for p in self.weights if p.grad is not None])
        for group in self.wopt.param_groups:
            group["lr"] = lr
        self.wopt.step()
        s = self.stats
        s["train_loss"] += loss.detach() * len(y)
        s["train_correct"] += (out.argmax(1) == y).sum()
        s["train_n"] += len(y)

    def _val_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.val_iter is None:
            self.val_iter = iter(self.val)
        try:
            return next(self.val_iter)
        except StopIteration:
            self.val_iter = iter(self.val)
            return next(self.val_iter)

    def alpha_step(self) -> None:
        x, y = self._val_batch()
        gen = step_generator(self.cfg.seed, self.step, 1)
        self.aopt.zero_grad(set_to_none=True)
        if self.cfg.algo == "grad":
            self._grad_alpha_step(x, y, gen)
        else:
            self._rl_alpha_step(x, y, gen)
        self.alpha_steps += 1
        self.probs_cpu = self.net.probs().detach().cpu()  # the one host sync of an alpha step

    def _grad_alpha_step(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> None:
        net, alpha = self.net, self.net.alpha
        probs = net.probs()
        plans, pairs = plan_gates(self.cfg.grad_mode, probs, self.probs_cpu, net.counts, gen)
        old = alpha.detach().gather(1, pairs.to(alpha.device)) if pairs is not None else None
        with frozen(self.weights), frozen_bn_stats(net):
            with self._autocast():
                out = net(x, [p.active for p in plans], plans)
            ce = F.cross_entropy(out.float(), y)
            loss, _ = self.objective(ce, probs)
            loss.backward()
        allreduce_mean_([alpha.grad])
        self.aopt.step()
        if pairs is not None:
            rescale_pairs(alpha, pairs, old)
        s = self.stats
        s["val_ce"] += ce.detach() * len(y)
        s["val_correct"] += (out.argmax(1) == y).sum()
        s["val_n"] += len(y)

    def _rl_alpha_step(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> None:
        with self._autocast():
            paths, accs = self.rl.evaluate(self.net, x, y, self.probs_cpu, gen, D.all_reduce_sum)
        loss, info = self.rl.loss(self.net, paths, accs, self.objective)
        loss.backward()  # rewards are global (reduced) and alpha is shared: every rank gets the same gradient
        self.aopt.step()
        self.stats["rl_reward"] += info["reward"]  # the same on every rank: the epoch's sum over ranks keeps the mean
        self.stats["rl_n"] += 1
        self.stats["val_correct"] += info["acc"] * len(y)
        self.stats["val_n"] += len(y)

    # ------------------------------------------------------------------ loop

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        start, steps0 = time.perf_counter(), self.step
        self.net.train()  # BN uses batch statistics in every step, alpha steps included (as the authors do)
        while self.epoch < cfg.total_epochs and not self.done:
            warm = self.epoch < cfg.warmup_epochs
            phase = "warmup" if warm else "search"
            bar = tqdm(
                total=len(self.train),
                initial=self.train.batch,
                desc=f"{phase} {self.epoch + 1}/{cfg.total_epochs}",
                disable=not (self.main and cfg.progress),
                leave=False,
                dynamic_ncols=True,
            )
            for x, y in self.train:
                lr = self._lr(warm, self.train.batch - 1)
                self.weight_step(x, y, lr, warm)
                self.step += 1
                if self._searching(warm) and self.train.batch % cfg.arch_every == 0:
                    self.alpha_step()
                bar.update(1)
                if bar.n % 50 == 0 and self.main and cfg.progress:
                    n = self.stats["train_n"].clamp_min(1)
                    bar.set_postfix(loss=f"{float(self.stats['train_loss'] / n):.3f}")
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                    self._save()
            bar.close()
            self._end_epoch(phase, self._lr(warm, len(self.train) - 1))
        seconds = time.perf_counter() - start
        self.done = True
        self._save()
        result = self._finish()
        result["steps_per_s"] = (self.step - steps0) / seconds if self.step > steps0 else None
        return result

    def _searching(self, warm: bool) -> bool:
        """Alpha steps run from search epoch ``arch_skip_epochs`` + 1 on: the authors skip the first search epoch,
        so the weights first adapt to paths sampled from the search's own distribution."""
        return not warm and self.epoch - self.cfg.warmup_epochs >= self.cfg.arch_skip_epochs

    def _end_epoch(self, phase: str, lr: float) -> None:
        keys = sorted(self.stats)
        totals = D.all_reduce_sum(torch.stack([self.stats[k].float() for k in keys])).tolist()  # over ranks
        s = dict(zip(keys, totals, strict=True))
        probs = self.net.probs().detach()
        path = probs.argmax(1).tolist()
        entropy = layer_entropy(probs.cpu().tolist(), self.net.counts)
        entry: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "phase": phase,
            "lr": lr,
            "steps": self.step,
            "train_loss": s["train_loss"] / max(s["train_n"], 1),
            "train_acc": s["train_correct"] / max(s["train_n"], 1),
            "val_acc": s["val_correct"] / s["val_n"] if s["val_n"] else None,
            "val_ce": s["val_ce"] / s["val_n"] if s["val_n"] and self.cfg.algo == "grad" else None,
            "rl_reward": s["rl_reward"] / s["rl_n"] if s["rl_n"] else None,
            "expected_latency": float(self.objective.expected(probs)) if self.objective else None,
            "argmax_latency": self.objective.path_latency(path) if self.objective else None,
            "argmax": self._labels(path),
            "alpha": self.net.alpha.detach().cpu().tolist(),
            "probs": probs.cpu().tolist(),
            "entropy": entropy,
            "mean_entropy": sum(entropy) / len(entropy),
        }
        self.history.append(entry)
        if self.log is not None:
            self.log.record(self.history)
        self.epoch += 1
        self.stats = self._zero_stats()
        if self.epoch < self.cfg.total_epochs:  # the last epoch's checkpoint is the final one, written by run()
            self._save()

    def _labels(self, path: list[int]) -> list[str]:
        return [op_label(b) for b in self.net.blocks_of(path)]

    def _finish(self) -> dict[str, Any]:
        """Write the derived arch (search) or just report (warm-up); every rank returns the same summary."""
        cfg = self.cfg
        result: dict[str, Any] = {"out": str(self.out), "epochs": self.epoch, "steps": self.step}
        if cfg.algo is None:
            return result
        argmax = self.net.argmax_path()
        argmax_latency = self.objective.path_latency(argmax)
        path, derivation = argmax, "argmax"
        if argmax_latency > cfg.target_latency:
            within = self.objective.most_probable_within_target(self.net.probs())
            if within is None:
                derivation = "argmax (no path fits the target)"
            else:
                path, derivation = within, "most probable path within the target (the argmax exceeds it)"
        name = self.out.name or "searched"
        arch = self.space.arch(self.net.blocks_of(path), name)
        breakdown = self.latency.predict_arch(arch)
        search_info = {
            "algo": cfg.algo,
            "grad_mode": cfg.grad_mode if cfg.algo == "grad" else None,
            "loss": cfg.loss if cfg.algo == "grad" else "reward acc*(T/LAT)^w",
            "target": cfg.lut or cfg.target,
            "target_latency": cfg.target_latency,
            "predicted_latency": breakdown.total_ms,
            "expected_latency": float(self.objective.expected(self.net.probs().detach())),
            "derivation": derivation,
            "argmax": self._labels(argmax),
            "argmax_latency": argmax_latency,
            "unit": self.latency.unit,
            "latency_model": self.latency.name,
            "epochs": cfg.epochs,
            "warmup_epochs": cfg.warmup_epochs,
            "init_from": cfg.init_from,
            "init_elastic": cfg.init_elastic,
            "seed": cfg.seed,
            # every setting of the run (where it ran and how it logged aside): enough to run it again
            "config": {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE},
        }
        report = convergence(self.history, self.op_labels, path)
        search_info["convergence"] = asdict(report)
        search_info["command"] = run_command(search_info["config"], self.out)
        if self.warmup_command:  # the shared warm-up it started from, to rerun it too
            search_info["warmup_command"] = self.warmup_command
        arch = replace(arch, extra={"search": search_info})
        if self.main:
            if report.warning:
                print(f"warning: {self.out}: {report.warning}", file=sys.stderr, flush=True)
            atomic_write(self.out / "arch.json", arch.to_json() + "\n")
            shown = None if path == argmax else (self._labels(path), breakdown.total_ms)
            self.log.plot(self.history, self.out / "alpha_evolution.png", cfg.target_latency, self.latency.unit, shown)
        result.update(
            arch=[str(b) for b in arch.blocks],
            predicted_latency=breakdown.total_ms,
            target_latency=cfg.target_latency,
            unit=self.latency.unit,
            arch_json=str(self.out / "arch.json"),
            convergence=asdict(report),
        )
        return result

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
