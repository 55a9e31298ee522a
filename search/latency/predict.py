"""Latency models: an arch's latency as a sum of per-op costs, and the supernet's expected latency from the same.

A model prices one op (``OpKey``); an arch costs its ops plus the model's per-network overhead (calibrated for
measured tables). For the search, ``candidate_matrix`` prices every candidate of every layer once, and
``expected_latency`` sums them under the architecture probabilities, so its gradient reaches the probabilities.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from search.latency.lut import LatencyError, Lut, OpKey
from search.latency.mobile import MobilePredictor
from search.latency.ops import arch_ops, layer_key, op_macs
from search.space import SearchSpace
from zoo.arch import ArchSpec

TABLES = Path(__file__).parent / "tables"
# The shipped tables by target name: (device, runtime, batch). A new hardware target is one entry here plus its
# table under tables/ (``proxyless search profile``).
SHIPPED = {
    "cpu": ("cpu", "onnxruntime", 1),
    "cpu-openvino": ("cpu", "openvino", 1),
    "cpu-torch": ("cpu", "torch", 1),
    "gpu": ("cuda", "torch", 8),
}
TARGETS = (*SHIPPED, "mobile", "flops")
MOBILE_TABLE = TABLES / "imagenet_pixel1_tflite_b1.json"


def shipped_table(space: str, device: str, runtime: str, batch: int) -> Path:
    return TABLES / f"{space}_{device}_{runtime}_b{batch}.json"


@dataclass(frozen=True)
class Breakdown:
    """One arch's predicted latency: ``layers`` per block of the arch, ``fixed`` the rest (stem, head, overhead)."""

    model: str
    unit: str
    layers: list[tuple[str, float]]
    fixed: list[tuple[str, float]]
    predicted_ops: int = 0  # ops priced by a fitted predictor rather than a table entry

    @property
    def total_ms(self) -> float:
        return sum(v for _, v in self.layers) + sum(v for _, v in self.fixed)


class LatencyModel:
    """Prices ops; ``overhead`` is a per-network constant added to every arch (0 where not calibrated)."""

    name = ""
    unit = "ms"
    overhead = 0.0

    def op_cost(self, key: OpKey) -> float:
        raise NotImplementedError

    def check_space(self, space: SearchSpace) -> None:
        """Refuse spaces the model cannot price (measured tables: only their own)."""

    def predict_arch(self, arch: ArchSpec) -> Breakdown:
        ops = arch_ops(arch)
        layers = [(name, self.op_cost(key)) for name, key in ops.blocks]
        fixed = [
            ("stem", self.op_cost(ops.stem)),
            ("feature_mix", self.op_cost(ops.feature_mix)),
            ("classifier (pool + linear)", self.op_cost(ops.classifier)),
        ]
        if self.overhead:
            fixed.append(("overhead (calibrated)", self.overhead))
        keys = [ops.stem, ops.feature_mix, ops.classifier, *(key for _, key in ops.blocks)]
        return Breakdown(self.name, self.unit, layers, fixed, self.predicted_ops(keys))

    def predicted_ops(self, keys: list[OpKey]) -> int:
        """How many of ``keys`` this model prices by a fitted predictor rather than a table entry."""
        return 0

    def candidate_matrix(self, space: SearchSpace) -> tuple[torch.Tensor, float]:
        """[n_layers, max_candidates] costs in ``space.candidates`` order (padding 0) and the fixed cost."""
        self.check_space(space)
        layers = space.layers()
        rows = [[self.op_cost(layer_key(layer, b)) for b in space.candidates(layer)] for layer in layers]
        matrix = torch.zeros(len(rows), max(len(r) for r in rows))
        for i, row in enumerate(rows):
            matrix[i, : len(row)] = torch.tensor(row)
        probe = arch_ops(space.uniform(space.expands[0], space.kernels[0], "probe"))
        fixed = sum(self.op_cost(k) for k in (probe.stem, probe.blocks[0][1], probe.feature_mix, probe.classifier))
        return matrix, float(fixed + self.overhead)


class TableModel(LatencyModel):
    """A measured table: every op must have an entry; the calibrated overhead comes from its header."""

    def __init__(self, lut: Lut, name: str) -> None:
        self.lut, self.name = lut, name
        calibration = lut.header.calibration or {}
        self.overhead = float(calibration.get("overhead_ms", 0.0))

    def op_cost(self, key: OpKey) -> float:
        return self.lut.ms(key, where=f"{self.name}: ")

    def check_space(self, space: SearchSpace) -> None:
        self.lut.check_space(space, where=self.name)


class MobileModel(LatencyModel):
    """Pixel 1: the published entry where the table has the op, else the predictor fitted on the table."""

    def __init__(self, lut: Lut) -> None:
        self.lut, self.name = lut, "mobile (Pixel 1 table + fitted predictor)"
        self.predictor = MobilePredictor.fit(list(lut.entries.values()))

    def op_cost(self, key: OpKey) -> float:
        return self.lut.ms(key) if key in self.lut.entries else self.predictor.predict(key)

    def predicted_ops(self, keys: list[OpKey]) -> int:
        return sum(k not in self.lut.entries and k.op != "zero" for k in keys)


class FlopsModel(LatencyModel):
    """Millions of MACs as the 'latency': the hardware-agnostic proxy the paper compares against."""

    name, unit = "flops", "MMACs"

    def op_cost(self, key: OpKey) -> float:
        return op_macs(key) / 1e6


def load_latency_model(target: str, space: SearchSpace) -> LatencyModel:
    """A shipped table of ``space`` (``SHIPPED``), ``mobile``, ``flops``, or a LUT file path."""
    if target == "flops":
        return FlopsModel()
    if target == "mobile":
        return MobileModel(Lut.load(MOBILE_TABLE))
    if target in SHIPPED:
        device, runtime, batch = SHIPPED[target]
        path = shipped_table(space.name, device, runtime, batch)
        if not path.exists():
            what = "GPU" if device == "cuda" else f"{runtime} CPU"
            raise LatencyError(
                f"no {what} table has been measured yet for space {space.name!r} ({path.name}); make one with "
                f"`proxyless search profile --space {space.name} --device {device} --runtime {runtime} "
                f"--batch {batch} --out {path}`"
            )
    else:
        path = Path(target)
        if not os.path.lexists(path):  # a device or FIFO is named by the guarded reader of Lut.load
            raise LatencyError(f"latency target {target!r} is neither one of {', '.join(TARGETS)} nor a LUT file")
    model = TableModel(Lut.load(path), name=f"{target} ({path.name})" if target in TARGETS else str(path))
    model.check_space(space)
    _refuse_negative(model, space)
    return model


def _refuse_negative(model: TableModel, space: SearchSpace) -> None:
    """A search would chase a meaningless optimum where the calibrated sum goes to zero or below: a table whose
    ops, each timed alone, carry a runtime's per-request cost that its negative per-network overhead takes off
    only for networks of typical depth (OpenVINO on the 28x28 ops)."""
    try:
        matrix, fixed = model.candidate_matrix(space)
    except LatencyError:  # a table with gaps: each gap is named where an arch needs it
        return
    widths = [len(space.candidates(ly)) for ly in space.layers()]  # rows are padded with 0 past their candidates
    cheapest = fixed + sum(float(row[:n].min()) for row, n in zip(matrix, widths, strict=True))
    if cheapest <= 0:
        raise LatencyError(
            f"{model.name}: predicts {cheapest:.3f} ms for the cheapest network of space {space.name!r} (its "
            f"calibrated overhead {model.overhead:+.3f} ms outweighs the smallest nets); the table's ops are "
            "dominated by per-request cost, so use another runtime's table for this space"
        )


def expected_latency(probs: torch.Tensor, matrix: torch.Tensor, fixed_ms: float) -> torch.Tensor:
    """fixed + sum_l sum_j p_lj * matrix_lj: differentiable in ``probs`` ([L, C], as ``matrix``)."""
    if probs.shape != matrix.shape:
        raise LatencyError(f"probs have shape {tuple(probs.shape)}, the latency matrix {tuple(matrix.shape)}")
    return fixed_ms + (probs * matrix.to(device=probs.device, dtype=probs.dtype)).sum()
