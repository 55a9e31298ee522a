"""Train a network from scratch: ``proxyless search train`` and ``train(TrainConfig)``.

Recipe: SGD with Nesterov momentum, linear warm-up then cosine decay (per step), label smoothing, no weight decay
on BN parameters and biases, optional EMA of the weights, optional bf16/fp16 autocast on CUDA. The defaults are
the Fashion-MNIST recipe (crop with 2-pixel padding, flip, random erasing; 60 epochs).

Everything needed to continue exactly is checkpointed atomically to ``OUT/checkpoint.pt`` at every epoch end
(and every ``checkpoint_minutes``, mid-epoch): weights, EMA, optimizer, scheduler, grad scaler, RNG states, the
loader position and the running epoch sums; ``--resume`` continues from it, giving the same weights on CPU as an
uninterrupted run. At the end ``OUT/model.safetensors`` + ``config.json`` (``zoo.weights.save_pretrained``;
the EMA weights when EMA is on) and ``OUT/metrics.json`` are written. Under ``torchrun`` the run is DDP (gloo on
CPU, NCCL on CUDA); only rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from search.space import get_space
from search.training import distributed as dist
from search.training.data import Augment, TrainData, build_train_data
from search.training.loop import EpochLoop, TrainError
from search.training.recipe import EMA, check_settings, distillation_loss, load_teacher, lr_factor, param_groups
from zoo.arch import ArchError, ArchSpec
from zoo.datasets import dataset_names, get_dataset
from zoo.evaluate import EvalResult, accumulate, summarize
from zoo.files import atomic_write
from zoo.network import count_macs, count_params
from zoo.options import add_options, from_args, option
from zoo.registry import build_network, get_model_info, spec_from_dict
from zoo.weights import load_pretrained, read_config, save_pretrained

# Changing these between a run and its --resume would silently change the experiment.
_RESUME_KEYS = (
    "dataset", "epochs", "batch_size", "lr", "warmup_epochs", "wd", "momentum", "label_smoothing", "ema", "seed",
    "limit_train", "val_size", "pad", "flip", "erase", "init", "teacher", "kd_weight",
)  # fmt: skip


@dataclass
class TrainConfig:
    """One training run, and the options of ``proxyless search train`` (zoo.options). ``lr`` is per 256 images
    (scaled linearly with ``batch_size``); ``ema`` 0 = off."""

    arch: str = option(MISSING, "arch JSON file, weights folder, zoo model name, or uniform:SPACE:kKeE")
    out: str = option(MISSING, "run directory: logs, checkpoint, final weights")
    dataset: str = option("fashion-mnist", "training data: a dataset of the registry (zoo.datasets)")
    data_dir: str | None = option(None, "dataset folder (Fashion-MNIST default: the Debian package's)")
    epochs: int = option(60, "epochs of the cosine schedule")
    batch_size: int = option(256, "global batch (all processes)")
    lr: float = option(0.2, "peak lr per 256 images (scaled by batch/256)")
    warmup_epochs: float = option(3.0, "linear lr warm-up")
    wd: float = option(5e-4, "weight decay of conv/linear weights")
    momentum: float = option(0.9, "Nesterov momentum")
    label_smoothing: float = option(0.1, "of the training loss")
    ema: float = option(0.9995, "EMA decay; 0 turns EMA off", const=0.9995)
    amp: str | None = option(None, "autocast on CUDA", choices=("bf16", "fp16"), const="bf16")
    device: str = option("cpu", "cpu or cuda")
    seed: int = option(0, "init, data order and augmentation")
    resume: bool = option(False, "continue OUT/checkpoint.pt")
    workers: int = option(4, "loader processes (ImageFolder data only)")
    limit_train: int | None = option(None, "train on a class-balanced subset of N images")
    val_size: int = option(0, "hold out N training images as a val split")
    pad: int = option(2, "random-crop padding in pixels (0 = no crop)")
    flip: bool = option(True, "random horizontal flips")
    erase: float = option(0.25, "random-erasing probability")
    channels_last: bool = option(True, "NHWC memory format (depthwise convs ~10x faster on CPU; cuDNN's usual)")
    eval_every: int = option(1, "test every N epochs (and the last)")
    checkpoint_minutes: float = option(10.0, "also checkpoint mid-epoch this often")
    stop_after_steps: int | None = option(None, "stop (checkpointed) after N steps of this invocation")
    time_limit_minutes: float | None = option(None, "stop (checkpointed) after N minutes", flag="--time-limit")
    progress: bool = option(True, "tqdm bars")
    init: str | None = option(None, "start from these weights (fine-tuning): weights folder, .safetensors or hf-hub:")
    teacher: str | None = option(
        None, "zoo model or weights folder of a teacher: adds CE to its soft predictions (distillation)"
    )
    kd_weight: float = option(1.0, "weight of the teacher's term")
    test: bool = option(True, "score the test split (off: the val split only, for a protocol that scores test once)")


def resolve_arch(text: str) -> Any:
    """An arch spec from a JSON file, a weights folder, a registered zoo model name, or ``uniform:SPACE:kKeE``."""
    if text.startswith("uniform:"):
        parts = text.split(":")
        if len(parts) != 3 or not parts[2].startswith("k") or "e" not in parts[2]:
            raise ArchError(f"bad arch {text!r}: expected uniform:SPACE:k<kernel>e<expand>, e.g. uniform:fmnist:k3e6")
        kernel, expand = parts[2][1:].split("e", 1)
        try:
            k, e = int(kernel), int(expand)
        except ValueError:
            raise ArchError(f"bad arch {text!r}: kernel and expand must be integers") from None
        return get_space(parts[1]).uniform(e, k, f"{parts[1]}_k{k}e{e}")
    path = Path(text)
    if path.is_dir():
        return spec_from_dict(read_config(path)["arch"])
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise ArchError(f"arch file {path} not found")
        try:
            return spec_from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise ArchError(f"{path}: not valid JSON ({e})") from None
    return get_model_info(text).arch


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _network_of(arch: dict[str, Any]) -> dict[str, Any]:
    """An arch dict without its metadata (``name``, ``extra``): a re-finalized arch.json still resumes."""
    return {k: v for k, v in arch.items() if k not in ("name", "extra")}


class Trainer(EpochLoop):
    """One run: builds data, network, optimizer; ``run()`` trains to the end (or a stop) and returns metrics."""

    FORMAT = "proxyless-train-checkpoint/1"
    RESUME_KEYS = _RESUME_KEYS

    def __init__(self, config: TrainConfig) -> None:
        self.config = c = config
        self._validate()
        self.device = dist.init_distributed(c.device)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = dist.is_main()
        self.out = Path(c.out)
        self.spec = resolve_arch(c.arch)
        data = get_dataset(c.dataset)
        if self.spec.in_chans != data.channels:
            raise TrainError(f"arch has {self.spec.in_chans} input channels, {c.dataset} has {data.channels}")
        if data.classes is not None and self.spec.num_classes != len(data.classes):
            raise TrainError(f"arch has {self.spec.num_classes} classes, {c.dataset} has {len(data.classes)}")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(c.seed)  # same initial weights on every rank
        self.data: TrainData = build_train_data(
            c.dataset,
            c.data_dir,
            c.batch_size,
            input_size=self.spec.input_size,
            device=self.device,
            augment=Augment(c.pad, c.flip, c.erase),
            seed=c.seed,
            val_size=c.val_size,
            limit_train=c.limit_train,
            rank=self.rank,
            world=self.world,
            workers=c.workers,
            channels_last=c.channels_last,
        )
        if self.spec.num_classes != len(self.data.classes):
            raise TrainError(f"arch has {self.spec.num_classes} classes, the data has {len(self.data.classes)}")
        self.model = build_network(self.spec).to(self.device)
        if c.init:
            load_pretrained(self.model, c.init)
        self.teacher = load_teacher(c.teacher, len(self.data.classes), self.device) if c.teacher else None
        if c.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = EMA(self.model, c.ema) if c.ema > 0 else None
        self.net: nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        lr = c.lr * c.batch_size / 256
        self.optimizer = torch.optim.SGD(
            param_groups(self.model, c.wd), lr=lr, momentum=c.momentum, nesterov=c.momentum > 0
        )
        self.steps_per_epoch = len(self.data.train)
        self.total_steps = c.epochs * self.steps_per_epoch
        warmup = round(c.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup, self.total_steps)
        )
        self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(c.amp or "")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=c.amp == "fp16")
        self.loader = self.data.train
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, hits, count of this epoch
        self.train_seconds = 0.0

    def _validate(self) -> None:
        c = self.config
        if not c.test and not c.val_size:
            raise TrainError("--no-test needs a --val-size split to score instead")
        if c.dataset not in dataset_names():
            raise TrainError(f"unknown dataset {c.dataset!r}; known: {', '.join(dataset_names())}")
        if c.epochs < 1 or c.batch_size < 1 or c.eval_every < 1:
            raise TrainError("epochs, batch size, eval-every must be >= 1")
        check_settings(c)
        if not 0 <= c.ema < 1:
            raise TrainError(f"EMA decay must be in [0, 1) (0 = off), got {c.ema}")
        if c.amp not in (None, "bf16", "fp16"):
            raise TrainError(f"--amp must be bf16 or fp16, got {c.amp!r}")
        if c.amp and not c.device.startswith("cuda"):
            raise TrainError("--amp needs --device cuda (CPU training runs in float32)")
        if not 0 <= c.erase <= 1 or c.pad < 0:
            raise TrainError("--erase must be a probability and --pad >= 0")

    # ------------------------------------------------------------ checkpoints

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "arch": self.spec.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "ema_updates": self.ema.updates if self.ema else 0,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(self.device),
            "loader": self.data.train.state_dict(),
            "step": self.step,
            "sums": self.sums.cpu(),
            "history": self.history,
            "train_seconds": self.train_seconds,
        }

    def _restore(self, ck: dict[str, Any], path: Path) -> None:
        if _network_of(ck["arch"]) != _network_of(self.spec.to_dict()):
            raise TrainError(f"{path}: checkpoint is of another architecture ({ck['arch'].get('name')!r})")
        self.model.load_state_dict(ck["model"])
        if self.ema:
            self.ema.module.load_state_dict(ck["ema"])
            self.ema.updates = ck["ema_updates"]
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"], self.device)
        self.data.train.load_state_dict(ck["loader"])
        self.step, self.history = ck["step"], ck["history"]
        self.sums = ck["sums"].to(self.device)
        self.train_seconds = ck["train_seconds"]

    # ------------------------------------------------------------ logs

    # ------------------------------------------------------------ loop

    def evaluate(self, module: nn.Module, loader: Any, autocast: bool = True) -> EvalResult:
        """Accuracy over the whole split: each rank evaluates its shard, the sums are added."""
        dtype = self.autocast if autocast else None
        return summarize(dist.all_reduce_sum(accumulate(module, loader, self.device, dtype)))

    def _train_mode(self) -> None:
        self.net.train()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        c = self.config
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            logits = self.net(x)
            with torch.no_grad():
                soft = self.teacher(x).softmax(1) if self.teacher is not None else None
            loss = distillation_loss(logits, y, c.label_smoothing, soft, c.kd_weight)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema:
            self.ema.update()
        with torch.no_grad():
            self.sums[0] += loss.detach().double() * len(y)
            self.sums[1] += (logits.argmax(1) == y).sum()
            self.sums[2] += len(y)

    def _postfix(self) -> dict[str, str]:
        return {"loss": f"{self.sums[0].item() / max(1.0, self.sums[2].item()):.3f}"}

    def _end_epoch(self, epoch: int, tb: Any) -> dict[str, Any]:
        c = self.config
        dist.average_buffers(self.model)
        if self.ema:
            dist.average_buffers(self.ema.module)
        loss, hits, n = dist.all_reduce_sum(self.sums.clone()).tolist()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss / n,
            "train_top1": hits / n,
            "train_seconds": round(self.train_seconds, 2),
        }
        self.sums.zero_()
        if (epoch + 1) % c.eval_every == 0 or epoch + 1 == c.epochs:
            splits = {"test": self.data.test} if c.test else {}
            splits |= {"val": self.data.val} if self.data.val is not None else {}
            for split, loader in splits.items():
                m = self.evaluate(self.model, loader)
                row |= {f"{split}_top1": m.top1, f"{split}_top5": m.top5, f"{split}_loss": m.loss}
                if self.ema:
                    m = self.evaluate(self.ema.module, loader)
                    row |= {f"ema_{split}_top1": m.top1, f"ema_{split}_loss": m.loss}
        self.history.append(row)
        self.write_logs(row, tb)
        if self.main:
            shown = [f"train loss {row['train_loss']:.3f} top-1 {row['train_top1'] * 100:.2f}%"]
            if "test_top1" in row:
                shown.append(f"test top-1 {row['test_top1'] * 100:.2f}%")
            if "ema_test_top1" in row:
                shown.append(f"EMA {row['ema_test_top1'] * 100:.2f}%")
            if "val_top1" in row:
                shown.append(f"val top-1 {row['val_top1'] * 100:.2f}%")
            tqdm.write(f"epoch {epoch + 1}/{c.epochs}: " + " | ".join(shown) + f" | {self.train_seconds:.0f} s")
        return row

    def _finish(self) -> dict[str, Any]:
        """Evaluate the weights that ship (EMA when on) on the full test split in float32; write weights + metrics."""
        c = self.config
        final = self.ema.module if self.ema else self.model
        split = "test" if c.test else "val"
        test = self.evaluate(final, self.data.test if c.test else self.data.val, autocast=False)
        result: dict[str, Any] = {"finished": True, "split": split, **test.to_dict()}
        if self.data.val is not None:
            result["val_top1"] = test.top1 if not c.test else self.evaluate(final, self.data.val, autocast=False).top1
        if not self.main:
            return result
        name = c.dataset
        what = f"EMA({c.ema}) weights" if self.ema else "weights"
        how = f"fine-tuned from {c.init}" if c.init else "trained from scratch"
        if c.teacher:
            how += f" with distillation from {c.teacher} (weight {c.kd_weight})"
        source = (
            f"{how} with `proxyless search train` on {name} ({c.epochs} epochs, batch {c.batch_size}, "
            f"lr {c.lr}/256, wd {c.wd}, seed {c.seed}); {what}; top1 on the full {name} {split} split"
        )
        metrics = {"top1": test.top1, "top5": test.top5, "source": f"{test.n} {name} {split} images"}
        metadata = {
            "dataset": name,
            "input_size": [self.spec.in_chans, self.spec.input_size, self.spec.input_size],
            "mean": list(self.data.mean),
            "std": list(self.data.std),
            "categories": list(self.data.classes),
            "source": source,
            "metrics": metrics,
        }
        save_pretrained(final, self.out, metadata)
        result |= {
            "arch": self.spec.name,
            "params": count_params(self.model),
            "macs": count_macs(self.spec) if isinstance(self.spec, ArchSpec) else None,
            "ema": c.ema if self.ema else None,
            "epochs": c.epochs,
            "train_seconds": round(self.train_seconds, 1),
            "seconds_per_epoch": round(self.train_seconds / c.epochs, 2),
            "world_size": self.world,
            "device": str(self.device),
            "out": str(self.out),
        }
        atomic_write(self.out / "metrics.json", json.dumps(result, indent=1) + "\n")
        return result


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one training (see the module docstring); returns the final metrics (``top1`` etc., fractions)."""
    try:
        return Trainer(config).run()
    finally:
        dist.cleanup()


# ---------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a network from scratch (SGD, cosine, label smoothing, EMA; resumable; DDP under torchrun)",
        description="Train a network from scratch; the defaults are the Fashion-MNIST recipe. Resumable "
        "(--resume), DDP under torchrun. The last line is JSON.",
    )
    add_options(p, TrainConfig)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    config = from_args(TrainConfig, args)
    return train_command(
        lambda: Trainer(config),
        lambda r: f"wrote {config.out}: {r['split']} top-1 {r['top1'] * 100:.2f}% on {r['n']} images",
    )


def train_command(make: Callable[[], Any], finished: Callable[[dict[str, Any]], str] | None = None) -> int:
    """A training command alone or under torchrun: the process group is closed whatever happens, and the main
    rank says how a run ended (``finished``'s line, or how to continue it) before its one line of JSON."""
    try:
        trainer = make()
        result = trainer.run()
    finally:
        dist.cleanup()
    if trainer.main:
        if not result["finished"]:
            print(f"stopped at step {result['step']}; continue with --resume", file=sys.stderr)
        elif finished:
            print(finished(result))
        print(json.dumps(result))
    return 0
