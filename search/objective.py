"""Latency-aware search losses: cross-entropy combined with the expected latency E[LAT], differentiable in alpha.

E[LAT] = fixed + sum over layers of sum_j p_j LAT_j, from a latency model's candidate matrix (zero op = 0 ms), so
every alpha — the zero op's included — gets a latency gradient: dE/dalpha_ij = p_ij (LAT_ij - E_i).

Losses (the authors' ``reg_loss_type``):
- ``mul#log``:    scale * CE * (log E[LAT] / log T) ** beta      (defaults scale 0.2, beta 0.3; needs T > 1)
- ``add#linear``: CE + lambda * (E[LAT] - T) / T                 (default lambda 0.1)
- ``add#hinge``:  CE + lambda * max(0, E[LAT] - T) / T          (ours: no latency pressure once under T, so a
  short search settles near its target instead of drifting to the cheapest ops)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from search.derive import most_probable_within
from search.latency import expected_latency

LOSSES = ("mul#log", "add#linear", "add#hinge")


class ObjectiveError(ValueError):
    """A loss or target the search objective cannot use."""


@dataclass
class LatencyObjective:
    """The search loss for one target latency ``target`` (in the latency model's ``unit``)."""

    matrix: torch.Tensor
    fixed: float
    target: float
    loss_type: str = "mul#log"
    scale: float = 0.2
    beta: float = 0.3
    lam: float = 0.1
    unit: str = "ms"
    _rows: list[list[float]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.loss_type not in LOSSES:
            raise ObjectiveError(f"unknown loss {self.loss_type!r}; expected one of {', '.join(LOSSES)}")
        if not self.target > 0:
            raise ObjectiveError(f"target latency must be > 0, got {self.target}")
        if self.loss_type == "mul#log" and self.target <= 1:
            raise ObjectiveError(
                f"mul#log needs a target above 1 {self.unit} (it divides by log T), got {self.target} {self.unit}; "
                "use --loss add#linear"
            )
        self._rows = self.matrix.detach().cpu().double().tolist()

    def to(self, device: torch.device | str) -> LatencyObjective:
        self.matrix = self.matrix.to(device)
        return self

    def expected(self, probs: torch.Tensor) -> torch.Tensor:
        """E[LAT] of the architecture distribution ``probs`` [L, C]."""
        return expected_latency(probs, self.matrix.to(probs.dtype), self.fixed)

    def __call__(self, ce: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(search loss, E[LAT]) for cross-entropy ``ce`` and the current probabilities."""
        lat = self.expected(probs.float())
        if self.loss_type == "mul#log":
            ratio = (torch.log(lat) / math.log(self.target)).clamp_min(1e-6)  # E < 1 unit: far under target
            return self.scale * ce * ratio**self.beta, lat
        excess = lat - self.target
        if self.loss_type == "add#hinge":
            excess = excess.clamp_min(0.0)
        return ce + self.lam * excess / self.target, lat

    def path_latency(self, path: Sequence[int]) -> float:
        """Predicted latency of one sampled path (a sum of table entries)."""
        return self.fixed + sum(row[i] for row, i in zip(self._rows, path, strict=True))

    def most_probable_within_target(self, probs: torch.Tensor) -> list[int] | None:
        """The most probable path of ``probs`` [L, C] whose latency is within the target (None: none is)."""
        return most_probable_within(probs.detach().cpu().double().tolist(), self._rows, self.fixed, self.target)
