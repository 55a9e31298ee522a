"""The pieces of the training recipe that every trainer shares (a plain net, the elastic supernet, a fine-tune):
the settings' bounds, which parameters decay, the per-step lr factor (linear warm-up, cosine), an EMA of
the weights, and the distillation loss with its frozen teacher.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search.training.loop import TrainError
from search.training.schedule import cosine
from zoo.evaluate import load_for_eval
from zoo.options import non_finite


def param_groups(model: nn.Module, wd: float) -> list[dict[str, Any]]:
    """Weight decay on conv / linear weights only: BN scales and biases are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits`` to soft target probabilities (a teacher's), averaged over the batch."""
    return -(soft * logits.log_softmax(1)).sum(1).mean()


def distillation_loss(
    logits: torch.Tensor, y: torch.Tensor, label_smoothing: float, soft: torch.Tensor | None, kd_weight: float
) -> torch.Tensor:
    """Label-smoothed cross-entropy, plus ``kd_weight`` x the cross-entropy to a teacher's ``soft`` predictions."""
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    return loss if soft is None else loss + kd_weight * soft_cross_entropy(logits, soft)


def load_teacher(source: str, classes: int, device: torch.device | str = "cpu") -> nn.Module:
    """A frozen teacher: a zoo model name (its registered weights) or a weights folder, in eval mode."""
    model, info = load_for_eval(source)
    if info.num_classes != classes:
        raise TrainError(f"teacher {source} has {info.num_classes} classes, the data has {classes}")
    return model.to(device).to(memory_format=torch.channels_last).eval().requires_grad_(False)


def check_settings(config: Any) -> None:
    """The float settings of a trainer's config, checked before any data is read: each finite, and the SGD,
    schedule, teacher and clock ones in range (every trainer has them). A NaN lr, a negative warm-up or a momentum
    of 1 would train to the end and write a net that learned nothing; a negative kd-weight trains away from the
    teacher; a checkpoint interval of 0 writes a checkpoint every step; a time limit of 0 stops after one."""
    if refusal := non_finite(config):
        raise TrainError(refusal)
    c = config
    bounds = [
        ("--lr", c.lr, c.lr > 0, "> 0"),
        ("--warmup-epochs", c.warmup_epochs, c.warmup_epochs >= 0, ">= 0"),
        ("--wd", c.wd, c.wd >= 0, ">= 0"),
        ("--momentum", c.momentum, 0 <= c.momentum < 1, "in [0, 1)"),
        ("--label-smoothing", c.label_smoothing, 0 <= c.label_smoothing < 1, "in [0, 1)"),
        ("--kd-weight", c.kd_weight, 0 < c.kd_weight <= 100, "in (0, 100]"),
        ("--checkpoint-minutes", c.checkpoint_minutes, c.checkpoint_minutes > 0, "> 0"),
        ("--time-limit", c.time_limit_minutes, c.time_limit_minutes is None or c.time_limit_minutes > 0, "> 0"),
    ]
    for flag, value, ok, wanted in bounds:
        if not ok:
            raise TrainError(f"{flag} must be {wanted}, got {value}")


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from 1/warmup to 1, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return cosine((step - warmup_steps) / max(1, total_steps - warmup_steps))


class EMA:
    """Exponential moving average of all floating-point weights and buffers (integer buffers are copied).

    The decay ramps up as ``min(decay, (1 + t) / (10 + t))`` so the average is not dominated by the random init.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values(), strict=True))
        self._ema = [e for e, _ in pairs if e.is_floating_point()]
        self._cur = [m for e, m in pairs if e.is_floating_point()]
        self._other = [(e, m) for e, m in pairs if not e.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        torch._foreach_lerp_(self._ema, self._cur, 1.0 - d)
        for e, m in self._other:
            e.copy_(m)
