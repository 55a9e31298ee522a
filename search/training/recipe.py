"""The pieces of the training recipe that every trainer shares (a plain net, the elastic supernet): which
parameters decay, the per-step lr factor (linear warm-up, cosine), and an EMA of the weights.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from search.training.schedule import cosine


def param_groups(model: nn.Module, wd: float) -> list[dict[str, Any]]:
    """Weight decay on conv / linear weights only: BN scales and biases are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


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
