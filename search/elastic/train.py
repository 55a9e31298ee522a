"""Train an elastic supernet once: ``proxyless search elastic-train``.

Sandwich rule with in-place distillation (Yu et al., slimmable / BigNAS): every step the largest subnet learns
from the labels (label-smoothed CE), then the smallest and ``random_subnets`` random subnets learn from the largest
subnet's detached soft predictions; their gradients add up and one SGD step follows. With ``--teacher`` (a trained
net) every subnet learns from the labels plus the teacher's soft predictions instead (Once-for-All's recipe);
``--init`` starts from a trained supernet, to continue one with a fresh schedule. ``--schedule progressive``
draws the students by Once-for-All's progressive shrinking instead (``shrinking.py``). Subnet draws come from a
generator seeded by (seed, step), so a resumed or multi-process run draws the same subnets.

Checkpoints (``OUT/checkpoint.pt``, every ``checkpoint_minutes``, on SIGTERM and at a time limit) hold the
weights in float32 and the EMA and momentum buffers in ``state_dtype`` (float16 by default: half the size of a
checkpoint carried in git; float32 makes a resume bit-identical). Every ``eval_every`` epochs the largest, the
baseline and the smallest subnet are extracted, BN-recalibrated and evaluated on the validation split held out
from the training set (never the test set). At the end ``OUT/supernet.safetensors`` + ``supernet.json``.
Under ``torchrun`` each process takes its shard of every batch and gradients are averaged over processes.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from search.elastic.evaluate import SubnetEvaluator
from search.elastic.shrinking import phase_of, progressive_students
from search.elastic.space import ElasticSpace, Subnet, get_elastic_space
from search.elastic.store import load_supernet, resolve_supernet, save_supernet
from search.elastic.supernet import ElasticSupernet
from search.training import distributed as dist
from search.training.data import Augment, build_train_data
from search.training.distributed import allreduce_mean_, mix_seed
from search.training.loop import EpochLoop, TrainError
from search.training.recipe import (
    EMA,
    check_settings,
    distillation_loss,
    load_teacher,
    lr_factor,
    param_groups,
    soft_cross_entropy,
)
from search.training.train import train_command
from zoo.datasets import get_dataset
from zoo.files import atomic_write
from zoo.options import add_options, from_args, option

STATE_DTYPES = ("float16", "bfloat16", "float32")
SCHEDULES = ("sandwich", "progressive")
FORMAT = "proxyless-elastic-checkpoint/1"
# Changing these between a run and its --resume would silently change the experiment.
_RESUME_KEYS = (
    "space",
    "dataset",
    "epochs",
    "batch_size",
    "lr",
    "warmup_epochs",
    "wd",
    "momentum",
    "label_smoothing",
    "ema",
    "random_subnets",
    "schedule",
    "seed",
    "val_size",
    "limit_train",
    "pad",
    "flip",
    "erase",
    "init",
    "teacher",
    "kd_weight",
)


@dataclass
class ElasticTrainConfig:
    """One supernet training, and the options of ``proxyless search elastic-train`` (zoo.options). ``lr`` is per
    256 images; ``eval_every`` counts epochs."""

    out: str = option(MISSING, "run directory: logs, checkpoint, final supernet")
    space: str = option("fmnist", "elastic space")
    dataset: str = option("fashion-mnist", "training data")
    data_dir: str | None = option(None, "dataset folder (Fashion-MNIST default: the Debian package's)")
    epochs: int = option(25, "epochs of the cosine schedule")
    batch_size: int = option(256, "global batch (all processes)")
    lr: float = option(0.2, "peak lr per 256 images")
    warmup_epochs: float = option(2.0, "linear lr warm-up")
    wd: float = option(5e-4, "weight decay of conv/linear weights")
    momentum: float = option(0.9, "Nesterov momentum")
    label_smoothing: float = option(0.1, "of the largest subnet's label loss")
    ema: float = option(0.9995, "EMA decay of the shared weights; 0 turns EMA off")
    random_subnets: int = option(2, "random subnets per step besides the largest and the smallest")
    schedule: str = option(
        "sandwich",
        "students of a step: sandwich (the smallest + random subnets) or progressive (random-subnets + 1 from "
        "a space elastic in kernel, then depth, then expand ratio)",
        choices=SCHEDULES,
    )
    init: str | None = option(
        None,
        "start from this trained supernet (folder or hf-hub:ORG/REPO[@REV]) with a fresh schedule: continue a supernet",
    )
    teacher: str | None = option(
        None,
        "zoo model or weights folder of a trained net: every subnet then learns from the labels plus its soft "
        "predictions (Once-for-All's distillation) instead of from the largest subnet's",
    )
    kd_weight: float = option(1.0, "weight of the teacher's term")
    val_size: int = option(5000, "training images held out for validation (class-balanced)")
    calib_images: int = option(2000, "training images that recalibrate BN before a subnet is evaluated")
    eval_every: int = option(2, "validate the largest / baseline / smallest subnets every N epochs (and the last)")
    pad: int = option(2, "random-crop padding in pixels")
    flip: bool = option(True, "random horizontal flips")
    erase: float = option(0.25, "random-erasing probability")
    seed: int = option(0, "init, data order, augmentation and subnet draws")
    device: str = option("cpu", "cpu or cuda")
    threads: int | None = option(None, "torch CPU threads (1 leaves the other cores free)")
    resume: bool = option(False, "continue OUT/checkpoint.pt")
    limit_train: int | None = option(None, "train on a class-balanced subset of N images")
    state_dtype: str = option(
        "float16", "dtype of EMA and momentum in checkpoints (float32: bit-identical resume)", choices=STATE_DTYPES
    )
    checkpoint_minutes: float = option(10.0, "also checkpoint mid-epoch this often")
    stop_after_steps: int | None = option(None, "stop (checkpointed) after N steps of this invocation")
    time_limit_minutes: float | None = option(None, "stop (checkpointed) after N minutes", flag="--time-limit")
    progress: bool = option(True, "tqdm bars")

    def validate(self) -> None:
        get_dataset(self.dataset)  # one line naming the known ones if unknown
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise TrainError("epochs, batch size and eval-every must be >= 1")
        check_settings(self)
        if self.random_subnets < 0 or self.val_size < 1 or self.calib_images < 1:
            raise TrainError("random-subnets must be >= 0, val-size and calib-images >= 1")
        if not 0 <= self.ema < 1:
            raise TrainError(f"EMA decay must be in [0, 1) (0 = off), got {self.ema}")
        if self.schedule not in SCHEDULES:
            raise TrainError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.state_dtype not in STATE_DTYPES:
            raise TrainError(f"--state-dtype must be float16, bfloat16 or float32, got {self.state_dtype!r}")
        if self.threads is not None and self.threads < 1:
            raise TrainError(f"--threads must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class StepLosses:
    """One step's losses: the largest subnet's (labels, plus the teacher's term with one), the mean of the others'
    (distillation from the largest, or what the largest learns from with a teacher)."""

    largest: float
    distill: float


class ElasticTrainer(EpochLoop):
    """Builds data, supernet and optimizer; ``run()`` trains to the end (or a stop) and returns a summary."""

    FORMAT = FORMAT
    RESUME_KEYS = _RESUME_KEYS

    def __init__(self, config: ElasticTrainConfig) -> None:
        config.validate()
        self.config = c = config
        self.space: ElasticSpace = get_elastic_space(c.space)
        if c.threads:
            torch.set_num_threads(c.threads)
        self.device = dist.init_distributed(c.device)
        self.rank, self.world, self.main = dist.rank(), dist.world_size(), dist.is_main()
        self.out = Path(c.out)
        torch.manual_seed(c.seed)  # same initial weights on every rank
        backbone = self.space.backbone
        init = self._load_init(c.init) if c.init else None  # both refused in one line before the data loads
        self.teacher = load_teacher(c.teacher, backbone.num_classes, self.device) if c.teacher else None
        data = build_train_data(
            c.dataset,
            c.data_dir,
            c.batch_size,
            input_size=backbone.input_size,
            device=self.device,
            augment=Augment(c.pad, c.flip, c.erase),
            seed=c.seed,
            val_size=c.val_size,
            limit_train=c.limit_train,
            rank=self.rank,
            world=self.world,
            channels_last=True,
        )
        if len(data.classes) != backbone.num_classes or data.channels != backbone.in_chans:
            raise TrainError(
                f"space {c.space} takes {backbone.in_chans}-channel images of {backbone.num_classes} classes; "
                f"{c.dataset} has {data.channels} channels and {len(data.classes)} classes"
            )
        self.data = data
        self.evaluator = (
            SubnetEvaluator.for_training(
                c.dataset, c.data_dir, self.space, c.val_size, c.calib_images, self.device, c.limit_train
            )
            if self.main
            else None
        )
        self.model = ElasticSupernet(self.space)
        if init is not None:
            self.model.load_state_dict(init.state_dict())
        self.model = self.model.to(self.device).to(memory_format=torch.channels_last)
        self.ema = EMA(self.model, c.ema) if c.ema > 0 else None
        lr = c.lr * c.batch_size / 256
        self.optimizer = torch.optim.SGD(
            param_groups(self.model, c.wd), lr=lr, momentum=c.momentum, nesterov=c.momentum > 0
        )
        self.steps_per_epoch = len(data.train)
        self.total_steps = c.epochs * self.steps_per_epoch
        warmup = round(c.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup, self.total_steps)
        )
        self.loader = data.train
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.sums = torch.zeros(3, dtype=torch.float64)  # largest loss, distill loss, steps of this epoch
        self.train_seconds = 0.0

    def _load_init(self, source: str) -> ElasticSupernet:
        """A trained supernet of this space to start from (checked as ``specialize`` checks one)."""
        trained, meta = load_supernet(resolve_supernet(source, self.config.space))
        if meta["space"] != self.space.name:
            raise TrainError(f"--init {source} is a supernet of space {meta['space']!r}, not {self.space.name!r}")
        return trained

    # ------------------------------------------------------------ one step

    def subnets_of_step(self, step: int) -> list[Subnet]:
        """The students of ``step`` (the same on every rank and after a resume): the smallest and the random ones,
        or under progressive shrinking random ones from the space elastic so far."""
        c = self.config
        rng = random.Random(mix_seed(c.seed, step))
        if c.schedule == "progressive":
            return progressive_students(self.space, rng, phase_of(step, self.total_steps), c.random_subnets + 1)
        return [self.space.smallest(), *(self.space.sample(rng) for _ in range(c.random_subnets))]

    def _train_mode(self) -> None:
        self.model.train()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        c = self.config
        self.optimizer.zero_grad(set_to_none=True)
        taught = None
        if self.teacher is not None:
            with torch.no_grad():
                taught = self.teacher(x).softmax(1)
        logits = self.model(x, self.space.largest())
        loss = distillation_loss(logits, y, c.label_smoothing, taught, c.kd_weight)
        loss.backward()
        soft = logits.detach().softmax(1)
        students = self.subnets_of_step(self.step)
        distill = 0.0
        for subnet in students:
            out = self.model(x, subnet)
            # with a teacher every subnet learns as the largest does; else from the largest (in-place)
            kd = (
                soft_cross_entropy(out, soft)
                if taught is None
                else distillation_loss(out, y, c.label_smoothing, taught, c.kd_weight)
            )
            kd.backward()
            distill += kd.item()
        if not torch.isfinite(loss):
            raise TrainError(f"the largest subnet's loss is {loss.item()} at step {self.step}: lower --lr")
        allreduce_mean_([p.grad for p in self.model.parameters() if p.grad is not None])
        self.optimizer.step()
        self.scheduler.step()
        if self.ema:
            self.ema.update()
        self.last = StepLosses(loss.item(), distill / max(1, len(students)))
        self.sums += torch.tensor([self.last.largest, self.last.distill, 1.0], dtype=torch.float64)

    def _postfix(self) -> dict[str, str]:
        return {"largest": f"{self.last.largest:.3f}", "distill": f"{self.last.distill:.3f}"}

    # ------------------------------------------------------------ checkpoints

    def _checkpoint(self) -> dict[str, Any]:
        low = getattr(torch, self.config.state_dtype)
        opt = self.optimizer.state_dict()
        opt["state"] = {
            k: {n: (v.to(low) if v.is_floating_point() and v.ndim else v) for n, v in s.items()}
            for k, s in opt["state"].items()
        }
        ema = None
        if self.ema:
            ema = {k: v.to(low) if v.is_floating_point() else v for k, v in self.ema.module.state_dict().items()}
        return {
            "model": self.model.state_dict(),
            "ema": ema,
            "ema_updates": self.ema.updates if self.ema else 0,
            "optimizer": opt,
            "scheduler": self.scheduler.state_dict(),
            "loader": self.data.train.state_dict(),
            "step": self.step,
            "sums": self.sums,
            "history": self.history,
            "train_seconds": self.train_seconds,
        }

    def _restore(self, ck: dict[str, Any], path: Path) -> None:
        self.model.load_state_dict(ck["model"])
        if self.ema:
            self.ema.module.load_state_dict(ck["ema"])  # load_state_dict copies into float32
            self.ema.updates = ck["ema_updates"]
        self.optimizer.load_state_dict(ck["optimizer"])
        for state in self.optimizer.state.values():
            for n, v in state.items():
                if torch.is_tensor(v) and v.is_floating_point() and v.ndim:
                    state[n] = v.float().to(self.device)
        self.scheduler.load_state_dict(ck["scheduler"])
        self.data.train.load_state_dict(ck["loader"])
        self.step, self.history, self.sums = ck["step"], ck["history"], ck["sums"]
        self.train_seconds = ck["train_seconds"]

    # ------------------------------------------------------------ logs and evaluation

    def final_module(self) -> ElasticSupernet:
        return self.ema.module if self.ema else self.model

    def _end_epoch(self, epoch: int, tb: Any) -> None:
        c = self.config
        dist.average_buffers(self.model)  # BN statistics of each rank's shards: one set, as one process keeps
        if self.ema:
            dist.average_buffers(self.ema.module)
        largest, distill, steps = self.sums.tolist()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss_largest": largest / max(1, steps),
            "loss_distill": distill / max(1, steps),
            "train_seconds": round(self.train_seconds, 1),
        }
        self.sums.zero_()
        if self.main and ((epoch + 1) % c.eval_every == 0 or epoch + 1 == c.epochs):
            named = {
                "largest": self.space.largest(),
                "baseline": self.space.baseline(),
                "smallest": self.space.smallest(),
            }
            for name, subnet in named.items():
                row[f"val_top1_{name}"] = self.evaluator.top1(self.final_module(), subnet)
        self.history.append(row)
        self.write_logs(row, tb)
        if self.main:
            shown = " | ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith(("loss", "val")))
            tqdm.write(f"epoch {epoch + 1}/{c.epochs}: {shown} | {self.train_seconds:.0f} s")
        dist.barrier()

    # ------------------------------------------------------------ loop

    def _finish(self) -> dict[str, Any]:
        """Write the supernet that ships (EMA weights when on) with its recipe and last validation figures."""
        last = self.history[-1]
        result: dict[str, Any] = {
            "finished": True,
            "space": self.config.space,
            "steps": self.step,
            "train_seconds": round(self.train_seconds, 1),
            **{k: v for k, v in last.items() if k.startswith("val_top1")},
        }
        if self.main:
            recipe = {k: v for k, v in asdict(self.config).items() if k in (*_RESUME_KEYS, "calib_images")}
            save_supernet(self.final_module(), self.out, {"recipe": recipe, "validation": result})
            atomic_write(self.out / "metrics.json", json.dumps(result, indent=1) + "\n")
        return result


def train_supernet(config: ElasticTrainConfig) -> dict[str, Any]:
    try:
        return ElasticTrainer(config).run()
    finally:
        dist.cleanup()


# ---------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "elastic-train",
        help="train an elastic (Once-for-All) supernet once: sandwich rule + in-place distillation; resumable",
        description="Train an elastic supernet; the last line is JSON.",
    )
    add_options(p, ElasticTrainConfig)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    config = from_args(ElasticTrainConfig, args)
    return train_command(lambda: ElasticTrainer(config))
