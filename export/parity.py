"""Parity of an exported artefact with eager PyTorch on the same real images.

Recorded: max and mean absolute logit difference and top-1 agreement. An fp32 artefact fails when the max
difference exceeds ``atol`` or the top-1 agreement falls below ``min_agreement``; a quantized one has no logit
tolerance (its accuracy change is what is reported). The images run in batches and once more alone, so the
dynamic batch dimension is exercised at 1 as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

DEFAULT_ATOL = 1e-4
DEFAULT_FP16_ATOL = 5e-2
DEFAULT_BF16_ATOL = 0.5


@dataclass(frozen=True)
class Parity:
    artefact: str
    images: int
    max_abs: float
    mean_abs: float
    top1_agreement: float
    atol: float | None
    min_agreement: float | None

    @property
    def ok(self) -> bool:
        if self.atol is None:
            return True
        return self.max_abs <= self.atol and self.top1_agreement >= (self.min_agreement or 0.0)

    def failure(self) -> str | None:
        """One line saying how the artefact failed, or None."""
        if self.ok:
            return None
        return (
            f"parity: {self.artefact} differs from eager PyTorch: max abs logit diff {self.max_abs:.3g} "
            f"(tolerance {self.atol:.3g}), top-1 agreement {100 * self.top1_agreement:.2f}% on {self.images} images"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def run_batched(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([np.asarray(run(x[i : i + batch]), np.float32) for i in range(0, len(x), batch)])


def eager_logits(model: nn.Module, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """The reference: eager PyTorch, fp32, on the CPU."""

    def run(chunk: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model.eval()(torch.from_numpy(chunk)).numpy()

    return run_batched(run, x, batch)


def compare(
    name: str,
    run: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    reference: np.ndarray,
    atol: float | None = DEFAULT_ATOL,
    min_agreement: float | None = 1.0,
    batch: int = 64,
) -> Parity:
    """Run ``run`` on ``x`` (batches of ``batch``, then the first image alone) against ``reference`` logits."""
    out = run_batched(run, x, batch)
    single = np.asarray(run(x[:1]), np.float32)
    diff = np.abs(out - reference)
    max_abs = max(float(diff.max()), float(np.abs(single - reference[:1]).max()))
    agreement = float((out.argmax(1) == reference.argmax(1)).mean())
    return Parity(
        name, len(x), max_abs, float(diff.mean()), agreement, atol, min_agreement if atol is not None else None
    )


def accuracy(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, labels: np.ndarray, batch: int = 64) -> float:
    """Top-1 accuracy (fraction) of ``run`` on ``x``."""
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((run(x[i : i + batch]).argmax(1) == labels[i : i + batch]).sum())
    return correct / len(x)
