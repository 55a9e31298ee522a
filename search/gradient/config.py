"""The gradient search's settings (``SearchConfig``, stored in every checkpoint) and the commands that reproduce
them, kept apart from the loop so that the CLI, the loop and the scripts that rebuild commands share one source.
"""

from __future__ import annotations

import shlex
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from search.gradient.gates import GRAD_MODES
from search.gradient.objective import LOSSES
from search.latency.predict import TARGETS
from search.space import get_space
from zoo.options import non_finite, option

ALGOS = ("grad", "rl")
WARMUP_EPOCHS = 5
# Settings that may change between an interrupted run and its --resume.
RESUMABLE = frozenset({"out", "resume", "device", "tensorboard", "ckpt_every", "progress", "data_dir"})
# The options `search warmup` shares with `search run` (it also takes --out and --epochs, its warm-up epochs).
WARMUP_FIELDS = (
    "space", "dataset", "data_dir", "batch_size", "val_size", "limit_train", "warmup_lr", "momentum", "weight_decay",
    "label_smoothing", "seed", "device", "amp", "channels_last", "init_elastic", "ckpt_every", "resume",
    "tensorboard", "progress",
)  # fmt: skip
FLAGS = ("amp", "channels_last")  # recorded as a bare --flag when on (off is their default)


class SearchError(ValueError):
    """A search configuration or checkpoint that cannot be run."""


@dataclass
class SearchConfig:
    """Everything a run depends on (stored in its checkpoint), and the options of ``search run`` (zoo.options;
    ``search warmup`` takes ``WARMUP_FIELDS``). Defaults follow the authors' search script."""

    out: str = option(MISSING, "run folder: checkpoint.pt, history.json, probs.csv, tb/ ...")
    space: str = option("fmnist", "search space (search/space.py)")
    dataset: str = option("fashion-mnist", "fashion-mnist, cifar10 or synthetic")
    data_dir: str | None = option(None, "dataset folder (default: the dataset's usual place)")
    target: str | None = option("cpu", f"{', '.join(TARGETS)}, or a LUT file")
    lut: str | None = option(None, "LUT file to use instead of --target's shipped table")
    target_latency: float | None = option(None, "T, in the latency model's unit", required=True)
    algo: str | None = option("grad", "grad (ProxylessNAS-G) or rl (-R: REINFORCE)", choices=ALGOS)
    grad_mode: str = option("full_v2", "ProxylessNAS-G's gradient estimator", choices=GRAD_MODES)
    loss: str = option("mul#ratio", "how latency enters the loss (docs/latency-loss.md)", choices=LOSSES)
    reg_scale: float = option(0.2, "mul#log: scale (authors' alpha)")
    reg_beta: float = option(0.3, "mul#log: exponent beta")
    ratio_beta: float = option(0.07, "mul#ratio: exponent up to T")
    ratio_beta_over: float = option(3.0, "mul#ratio: exponent beyond T")
    reg_lambda: float = option(0.1, "add#linear, add#hinge: lambda")
    rl_samples: int = option(10, "REINFORCE: nets sampled per alpha step")
    rl_tradeoff: float = option(0.1, "REINFORCE: w in acc*(T/LAT)^w")
    rl_baseline_decay: float = option(0.9, "REINFORCE: decay of the reward's moving-average baseline")
    epochs: int = option(10, "search epochs (after the warm-up)")
    warmup_epochs: int = option(WARMUP_EPOCHS, "ignored with --init-from")
    batch_size: int = option(256, "global batch of weight steps")
    val_batch_size: int = option(256, "batch of an alpha step")
    val_size: int = option(5000, "class-balanced held-out split for alpha")
    limit_train: int | None = option(None, "class-balanced subset of the training split")
    lr: float = option(0.025, "weights: cosine from this over the search epochs")
    warmup_lr: float = option(0.05, "cosine from this over the warm-up")
    momentum: float = option(0.9, "Nesterov momentum of the weights")
    weight_decay: float = option(4e-5, "weight decay of the weights")
    label_smoothing: float = option(0.1, "of the weight steps' loss")
    arch_lr: float = option(1e-3, "Adam lr of alpha (betas 0, 0.999)")
    arch_every: int = option(5, "one alpha step every N weight steps")
    arch_skip_epochs: int = option(1, "first search epochs without alpha steps")
    alpha_init_std: float = option(1e-3, "alpha ~ N(0, std) (paper: 1e-3)")
    seed: int = option(0, "init, sampled paths, data order and augmentation")
    device: str = option("cpu", "cpu or cuda (torchrun: one GPU per local rank)")
    amp: bool = option(False, "bfloat16 autocast")
    channels_last: bool = option(False, "NHWC memory format")
    ckpt_every: int = option(0, "also checkpoint every N steps (0: epoch ends only)")
    init_from: str | None = option(None, "a finished warm-up's checkpoint.pt (skips the warm-up)")
    init_elastic: str | None = option(
        None, "start every candidate from a trained elastic supernet: a folder, hf-hub:ORG/REPO, or 'bundled'"
    )
    tensorboard: bool = option(True, "TensorBoard events under OUT/tb")
    progress: bool = option(True, "tqdm bars")
    resume: bool = option(False, "continue the run in --out from its checkpoint")

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
        if refusal := non_finite(self):
            raise SearchError(refusal)
        if min(self.lr, self.warmup_lr, self.arch_lr) <= 0 or min(self.weight_decay, self.alpha_init_std) < 0:
            raise SearchError("--lr, --warmup-lr and --arch-lr must be > 0, --weight-decay and --alpha-init-std >= 0")
        if not (0 <= self.momentum < 1 and 0 <= self.label_smoothing < 1 and 0 <= self.rl_baseline_decay < 1):
            raise SearchError("--momentum, --label-smoothing and --rl-baseline-decay must be in [0, 1)")
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
