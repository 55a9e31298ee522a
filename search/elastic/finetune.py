"""Fine-tune a network within a budget, optionally distilling from a teacher: ``specialize --finetune-min``.

Weights inherited from the supernet are about a point short of the same net trained alone; a fine-tune, optionally
distilled from a trained net, is what closes that gap (how far, at which cost: docs/finetune.md). Two kinds of run:
a fixed number of steps (reproducible, for studies and recipes), or a wall-clock budget (the journey), whose
warm-up and cosine run on the clock, so the schedule ends at the deadline however fast the machine is and however
its speed changes; everything the fine-tune does (data, training, the final validation pass) fits the budget.
Training images are the supernet run's training split (its validation split stays held out), with the supernet's
augmentation.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from search.training.data import Augment, TrainData, build_train_data
from search.training.recipe import distillation_loss, load_teacher, param_groups
from search.training.schedule import cosine
from zoo.evaluate import accumulate, summarize

MAX_MINUTES = 24 * 60.0
MAX_STEPS = 10**6


class FinetuneError(ValueError):
    """A fine-tune that cannot run (checked before any training)."""


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tune. Exactly one of ``minutes`` (wall-clock budget) and ``steps`` (fixed length) is set.

    ``lr`` is the peak per 256 images, a twentieth of the supernet's: the weights start trained, and larger ones
    cost accuracy in short runs (docs/finetune.md, step 1). ``teacher`` is a zoo model name or weights folder
    (``None``: no distillation); its soft predictions add a cross-entropy term of weight ``kd_weight`` to the
    label-smoothed one. ``reserve_s`` of a budget is kept for the final validation pass.
    """

    minutes: float | None = None
    steps: int | None = None
    teacher: str | None = None
    lr: float = 0.01
    batch_size: int = 256
    kd_weight: float = 1.0
    label_smoothing: float = 0.1
    wd: float = 5e-4
    momentum: float = 0.9
    warmup_fraction: float = 0.05
    seed: int = 0
    reserve_s: float = 10.0
    progress: bool = True

    def validate(self) -> None:
        if (self.minutes is None) == (self.steps is None):
            raise FinetuneError("give exactly one of a budget in minutes and a number of steps")
        if self.minutes is not None and not (math.isfinite(self.minutes) and 0 < self.minutes <= MAX_MINUTES):
            raise FinetuneError(f"the fine-tune budget must be > 0 and <= {MAX_MINUTES:g} minutes, got {self.minutes}")
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise FinetuneError(f"the fine-tune must run 1..{MAX_STEPS} steps, got {self.steps}")
        for name in ("lr", "kd_weight", "label_smoothing", "wd", "momentum", "warmup_fraction", "reserve_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise FinetuneError(f"fine-tune {name} must be finite and >= 0, got {value}")
        if self.lr <= 0 or self.batch_size < 1 or self.label_smoothing >= 1 or self.warmup_fraction >= 1:
            raise FinetuneError("fine-tune lr must be > 0, batch size >= 1, smoothing and warm-up fraction < 1")


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tune did: its steps and time, and the net's val top-1 after it."""

    steps: int
    seconds: float
    step_seconds: float
    val_top1: float
    teacher: str | None
    lr: float
    budget_minutes: float | None

    def describe(self) -> str:
        how = f"distilled from {self.teacher}" if self.teacher else "no teacher"
        budget = f" within {self.budget_minutes:g} min" if self.budget_minutes is not None else ""
        return f"then fine-tuned {self.steps} steps{budget} ({how}, peak lr {self.lr} per 256 images, cosine)"


@dataclass(frozen=True)
class DataRecipe:
    """The training run whose split and augmentation a fine-tune reuses (a supernet's ``recipe`` has them all)."""

    dataset: str
    val_size: int
    pad: int = 2
    flip: bool = True
    erase: float = 0.25
    limit_train: int | None = None
    data_dir: str | None = None

    @classmethod
    def of(cls, recipe: dict[str, Any], data_dir: str | None = None) -> DataRecipe:
        keys = ("dataset", "val_size", "pad", "flip", "erase", "limit_train")
        return cls(**{k: recipe[k] for k in keys if k in recipe}, data_dir=data_dir)


def lr_at(fraction: float, warmup_fraction: float) -> float:
    """The lr factor at ``fraction`` of a run: linear warm-up, then cosine to 0 at 1."""
    if fraction < warmup_fraction:
        return max(fraction, 1e-3) / warmup_fraction
    return cosine(min(1.0, (fraction - warmup_fraction) / (1 - warmup_fraction)))


def _batches(data: TrainData) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from data.train


class _Step:
    """One SGD step of label-smoothed cross-entropy plus distillation, at a given lr factor."""

    def __init__(self, net: nn.Module, teacher: nn.Module | None, cfg: FinetuneConfig) -> None:
        self.net, self.teacher, self.cfg = net, teacher, cfg
        self.lr = cfg.lr * cfg.batch_size / 256
        self.optimizer = torch.optim.SGD(
            param_groups(net, cfg.wd), lr=self.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor, factor: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * factor
        logits = self.net(x)
        with torch.no_grad():
            soft = self.teacher(x).softmax(1) if self.teacher is not None else None
        loss = distillation_loss(logits, y, self.cfg.label_smoothing, soft, self.cfg.kd_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def _step_estimate(net: nn.Module, teacher: nn.Module | None, x: torch.Tensor, clock: Callable[[], float]) -> float:
    """A training step's seconds before the first one: three forward passes (forward, backward) plus the teacher's."""
    net.eval()  # no BN statistics update from the timing pass
    tick = clock()
    with torch.no_grad():
        net(x)
        if teacher is not None:
            teacher(x)
    seconds = 3 * (clock() - tick)
    net.train()
    return seconds


def finetune(
    net: nn.Module,
    cfg: FinetuneConfig,
    data: DataRecipe,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FinetuneResult:
    """Fine-tune ``net`` in place (CPU, float32) and return what was done; ``log`` receives progress lines.

    A budgeted run never starts a step that it expects to end past the deadline (the first step's time is
    estimated from a forward pass), so it overruns by at most a step that took longer than the one before."""
    cfg.validate()
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    started = clock()
    torch.manual_seed(cfg.seed)
    train_data = build_train_data(
        data.dataset,
        data.data_dir,
        cfg.batch_size,
        input_size=net.spec.input_size,
        device="cpu",
        augment=Augment(data.pad, data.flip, data.erase),
        seed=cfg.seed,
        val_size=data.val_size,
        limit_train=data.limit_train,
        channels_last=True,
    )
    if train_data.val is None:
        raise FinetuneError(f"the {data.dataset} recipe holds out no validation split (val_size 0)")
    teacher = load_teacher(cfg.teacher, len(train_data.classes)) if cfg.teacher else None
    net = net.to(memory_format=torch.channels_last).train()
    step, batches = _Step(net, teacher, cfg), _batches(train_data)
    first = next(batches)
    last = _step_estimate(net, teacher, first[0], clock)
    batches = itertools.chain([first], batches)
    train_start = clock()
    # a budget's schedule runs on the clock, from now to the deadline less the final validation pass
    span = 60 * cfg.minutes - (train_start - started) - cfg.reserve_s if cfg.minutes is not None else None
    length = f"{cfg.steps} steps" if span is None else f"{max(0.0, span):.0f} s of training"
    teacher_text = f"teacher {cfg.teacher}" if cfg.teacher else "no teacher"
    say(f"fine-tune: {length} of batch {cfg.batch_size}, {teacher_text}")
    bar = tqdm(
        total=cfg.steps or round(max(0.0, span)),
        desc="fine-tune",
        unit="step" if cfg.steps else "s",
        disable=not cfg.progress,
        leave=False,
        file=sys.stderr,
    )
    done = 0
    while True:
        elapsed = clock() - train_start
        if span is None:
            if done == cfg.steps:
                break
            fraction = done / cfg.steps
            bar.update(1)
        else:
            if elapsed + last > span:  # the next step would end past the deadline
                break
            fraction = elapsed / span
            bar.update(round(elapsed) - bar.n)
        tick = clock()
        x, y = next(batches)
        step(x, y, lr_at(fraction, cfg.warmup_fraction))
        last = clock() - tick
        done += 1
    bar.close()
    seconds = clock() - train_start
    top1 = float(summarize(accumulate(net, train_data.val, torch.device("cpu"))).top1)
    say(f"fine-tune: {done} steps in {seconds:.0f} s; val top-1 {top1 * 100:.2f}%")
    return FinetuneResult(
        steps=done,
        seconds=round(clock() - started, 1),
        step_seconds=round(seconds / max(1, done), 4),
        val_top1=top1,
        teacher=cfg.teacher,
        lr=cfg.lr,
        budget_minutes=cfg.minutes,
    )
