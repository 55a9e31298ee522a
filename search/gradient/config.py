"""The gradient search's settings (``SearchConfig``, stored in every checkpoint) and the commands that reproduce
them, kept apart from the loop so that the CLI, the loop and the scripts that rebuild commands share one source.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.gradient.gates import GRAD_MODES
from search.gradient.objective import LOSSES
from search.space import get_space

ALGOS = ("grad", "rl")
# Settings that may change between an interrupted run and its --resume.
RESUMABLE = frozenset({"out", "resume", "device", "tensorboard", "ckpt_every", "progress", "data_dir"})
# The options `search warmup` shares with `search run` (it also takes --out and --epochs, its warm-up epochs).
WARMUP_FIELDS = (
    "space", "dataset", "data_dir", "batch_size", "val_size", "limit_train", "warmup_lr", "momentum", "weight_decay",
    "label_smoothing", "seed", "device", "amp", "channels_last", "init_elastic", "ckpt_every", "resume",
    "tensorboard", "progress",
)  # fmt: skip
FLAGS = ("amp", "channels_last")  # store_true options


class SearchError(ValueError):
    """A search configuration or checkpoint that cannot be run."""


@dataclass
class SearchConfig:
    """Everything a run depends on (stored in its checkpoint). Defaults follow the authors' search script."""

    out: str
    space: str = "fmnist"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    target: str | None = "cpu"
    lut: str | None = None
    target_latency: float | None = None
    algo: str | None = "grad"
    grad_mode: str = "full_v2"
    loss: str = "mul#ratio"
    reg_scale: float = 0.2
    reg_beta: float = 0.3
    ratio_beta: float = 0.07
    ratio_beta_over: float = 3.0
    reg_lambda: float = 0.1
    rl_samples: int = 10
    rl_tradeoff: float = 0.1
    rl_baseline_decay: float = 0.9
    epochs: int = 10
    warmup_epochs: int = 5
    batch_size: int = 256
    val_batch_size: int = 256
    val_size: int = 5000
    limit_train: int | None = None
    lr: float = 0.025
    warmup_lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    arch_lr: float = 1e-3
    arch_every: int = 5
    arch_skip_epochs: int = 1
    alpha_init_std: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    channels_last: bool = False
    ckpt_every: int = 0
    init_from: str | None = None
    init_elastic: str | None = None
    tensorboard: bool = True
    progress: bool = True
    resume: bool = False

    def validate(self) -> None:
        get_space(self.space)
        if self.algo is not None:
            if self.algo not in ALGOS:
                raise SearchError(f"unknown --algo {self.algo!r}; expected one of {', '.join(ALGOS)}")
            if self.grad_mode not in GRAD_MODES:
                raise SearchError(f"unknown --grad-mode {self.grad_mode!r}; expected one of {', '.join(GRAD_MODES)}")
            if self.loss not in LOSSES:
                raise SearchError(f"unknown --loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
            if self.target_latency is None or not self.target_latency > 0:
                raise SearchError("--target-latency must be given and > 0 (in the latency model's unit)")
            if self.epochs < 1:
                raise SearchError(f"--epochs must be >= 1 for a search, got {self.epochs}")
            if not 0 <= self.arch_skip_epochs < self.epochs:
                raise SearchError(
                    f"--arch-skip-epochs must be >= 0 and below --epochs ({self.epochs}) so that alpha is searched, "
                    f"got {self.arch_skip_epochs}"
                )
        for name in ("batch_size", "val_batch_size", "arch_every", "val_size"):
            if getattr(self, name) < 1:
                raise SearchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.warmup_epochs < 0 or self.epochs < 0:
            raise SearchError("--epochs / --warmup-epochs must be >= 0")
        if self.init_from and self.init_elastic:
            raise SearchError("--init-from and --init-elastic both set the starting weights: pass one")
        if self.algo is not None and self.val_batch_size > self.val_size:
            raise SearchError(f"--val-batch-size {self.val_batch_size} is larger than --val-size {self.val_size}")

    @property
    def total_epochs(self) -> int:
        return self.warmup_epochs + (self.epochs if self.algo else 0)


def run_argv(config: dict[str, Any]) -> list[str]:
    """``proxyless search run`` arguments that reproduce a search ``config`` (``asdict`` of its SearchConfig,
    less where it ran and how it logged): the command recorded with a derived arch."""
    argv = []
    for key, value in config.items():
        if key in RESUMABLE or value is None or (key in FLAGS and not value):
            continue
        argv.append(f"--{key.replace('_', '-')}")
        if key not in FLAGS:
            argv.append(str(value))
    return argv


def run_command(config: dict[str, Any], out: str | Path) -> str:
    """The shell command that reruns the search ``config`` into ``out``."""
    return "proxyless search run " + shlex.join([*run_argv(config), "--out", str(out)])


def warmup_command(config: dict[str, Any], out: str | Path) -> str:
    """The ``proxyless search warmup`` command that reruns a warm-up ``config`` (its checkpoint's) into ``out``."""
    kept = {k: v for k, v in config.items() if k in WARMUP_FIELDS}
    argv = [*run_argv(kept), "--epochs", str(config["warmup_epochs"]), "--out", str(out)]
    return "proxyless search warmup " + shlex.join(argv)
