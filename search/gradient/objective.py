"""Latency-aware search losses: cross-entropy combined with the expected latency E[LAT], differentiable in alpha.

E[LAT] = fixed + sum over layers of sum_j p_j LAT_j, from a latency model's candidate matrix (zero op = 0 ms), so
every alpha — the zero op's included — gets a latency gradient: dE/dalpha_ij = p_ij (LAT_ij - E_i).

Losses (the authors' ``reg_loss_type``, plus ours; docs/latency-loss.md says why ``mul#ratio`` is the default):
- ``mul#ratio``:  CE * (LAT / T) ** w, w = ratio_beta while LAT <= T, ratio_beta_over above it (0.07 and 3)
  LAT = max(E[LAT], latency of the argmax net), with E[LAT]'s gradient (straight-through). Scale-free: only the
  ratio enters, so a 0.5 ms and an 80 ms target behave alike. Under the target the gradient is
  CE * w * (LAT/T)^w * dE/LAT: the table's relative costs keep moving alpha however loose the target. The kink at
  T is what makes the target matter at all: with one exponent T would only scale the loss, and Adam is blind to
  that. Taking the argmax net's latency too makes the target constrain the net that is derived, not only the
  mixture (whose E[LAT] can sit under T while its argmax is over it). 0.07 is the paper's own exponent at its
  78 ms target (mul#log's beta 0.3 / ln 78 on the ratio) and MnasNet's soft one: under T accuracy leads and
  the table tilts it; beyond T, 3 puts latency first until the net is back within it.
- ``mul#log``:    scale * CE * (log E[LAT] / log T) ** beta      (defaults scale 0.2, beta 0.3; needs T > 1)
- ``add#linear``: CE + lambda * (E[LAT] - T) / T                 (default lambda 0.1)
- ``add#hinge``:  CE + lambda * max(0, E[LAT] - T) / T          (no latency pressure once under T)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from search.gradient.derive import most_probable_within
from search.latency import expected_latency

LOSSES = ("mul#ratio", "mul#log", "add#linear", "add#hinge")


class ObjectiveError(ValueError):
    """A loss or target the search objective cannot use."""


@dataclass
class LatencyObjective:
    """The search loss for one target latency ``target`` (in the latency model's ``unit``)."""

    matrix: torch.Tensor
    fixed: float
    target: float
    loss_type: str = "mul#ratio"
    scale: float = 0.2
    beta: float = 0.3
    lam: float = 0.1
    unit: str = "ms"
    ratio_beta: float = 0.07
    ratio_beta_over: float = 3.0
    _rows: list[list[float]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.loss_type not in LOSSES:
            raise ObjectiveError(f"unknown loss {self.loss_type!r}; expected one of {', '.join(LOSSES)}")
        if not self.target > 0:
            raise ObjectiveError(f"target latency must be > 0, got {self.target}")
        if self.loss_type == "mul#log" and self.target <= 1:
            raise ObjectiveError(
                f"mul#log needs a target above 1 {self.unit} (it divides by log T), got {self.target} {self.unit}; "
                "use --loss mul#ratio"
            )
        if self.loss_type == "mul#ratio" and not 0 <= self.ratio_beta <= self.ratio_beta_over:
            raise ObjectiveError(
                f"mul#ratio needs 0 <= ratio_beta <= ratio_beta_over, got {self.ratio_beta} and {self.ratio_beta_over}"
            )
        self._rows = self.matrix.detach().cpu().double().tolist()

    def to(self, device: torch.device | str) -> LatencyObjective:
        self.matrix = self.matrix.to(device)
        return self

    def expected(self, probs: torch.Tensor) -> torch.Tensor:
        """E[LAT] of the architecture distribution ``probs`` [L, C]."""
        return expected_latency(probs, self.matrix.to(probs.dtype), self.fixed)

    def argmax_latency(self, probs: torch.Tensor) -> torch.Tensor:
        """Predicted latency of the per-layer argmax of ``probs``, on its device (no host sync)."""
        chosen = self.matrix.to(probs.dtype).gather(1, probs.detach().argmax(1, keepdim=True))
        return self.fixed + chosen.sum()

    def __call__(self, ce: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(search loss, E[LAT]) for cross-entropy ``ce`` and the current probabilities."""
        probs = probs.float()
        lat = self.expected(probs)
        if self.loss_type == "mul#ratio":
            return ce * self.ratio_factor(lat, self.argmax_latency(probs)), lat
        if self.loss_type == "mul#log":
            ratio = (torch.log(lat) / math.log(self.target)).clamp_min(1e-6)  # E < 1 unit: far under target
            return self.scale * ce * ratio**self.beta, lat
        excess = lat - self.target
        if self.loss_type == "add#hinge":
            excess = excess.clamp_min(0.0)
        return ce + self.lam * excess / self.target, lat

    def ratio_factor(self, expected: torch.Tensor, argmax: torch.Tensor) -> torch.Tensor:
        """(LAT / T) ** w of ``mul#ratio``: LAT the larger of E[LAT] and the argmax net's latency, differentiated
        as E[LAT]; w = ratio_beta up to the target, ratio_beta_over beyond it."""
        lat = expected + (torch.maximum(expected, argmax) - expected).detach()
        ratio = lat / self.target
        exponent = torch.where(ratio > 1, self.ratio_beta_over, self.ratio_beta)
        return ratio**exponent

    def path_latency(self, path: Sequence[int]) -> float:
        """Predicted latency of one sampled path (a sum of table entries)."""
        return self.fixed + sum(row[i] for row, i in zip(self._rows, path, strict=True))

    def most_probable_within_target(self, probs: torch.Tensor) -> list[int] | None:
        """The most probable path of ``probs`` [L, C] whose latency is within the target (None: none is)."""
        return most_probable_within(probs.detach().cpu().double().tolist(), self._rows, self.fixed, self.target)
