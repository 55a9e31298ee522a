"""A subnet's latency from any latency model of the backbone, priced once per (layer, kernel, expand).

``SubnetLatency`` precomputes every layer's cost of every choice (the model's ``candidate_matrix``) so the
evolutionary search prices tens of thousands of subnets in a blink; it equals ``model.predict_arch`` on the
subnet's arch (tested), whose sum it is.
"""

from __future__ import annotations

import torch

from search.elastic.space import ElasticSpace, Subnet
from search.latency.predict import LatencyModel, TableModel, load_latency_model
from search.latency.runtimes import make_runner
from search.latency.validate import measure_networks
from zoo.arch import ArchSpec


class SubnetLatency:
    """Predicted latency of subnets of ``space`` under ``model`` (its unit: ms, or MMACs for ``flops``)."""

    def __init__(self, space: ElasticSpace, model: LatencyModel) -> None:
        self.space, self.model = space, model
        matrix, self.fixed = model.candidate_matrix(space.backbone)
        self.cost: list[dict[tuple[int, int], float]] = []
        for i, layer in enumerate(space.layers()):
            cands = space.backbone.candidates(layer)
            self.cost.append({(b.kernel, b.expand): float(matrix[i, j]) for j, b in enumerate(cands) if not b.zero})

    @classmethod
    def load(cls, space: ElasticSpace, target: str) -> SubnetLatency:
        """``target``: a target of ``search.latency.predict.TARGETS`` or a LUT file of the backbone."""
        return cls(space, load_latency_model(target, space.backbone))

    @property
    def unit(self) -> str:
        return self.model.unit

    def __call__(self, subnet: Subnet) -> float:
        return self.fixed + sum(self.cost[i][subnet.kernels[i], subnet.expands[i]] for i in self.space.active(subnet))

    def batch(self, subnets: list[Subnet]) -> torch.Tensor:
        return torch.tensor([self(s) for s in subnets], dtype=torch.float64)

    def measure(self, archs: list[ArchSpec], budget_s: float) -> list[float] | None:
        """Each arch's latency measured here as the table was (its runtime, threads, batch, statistic),
        interleaved; None where the table is not a measurement of this kind of machine (Pixel-1, FLOPs, a GPU
        table on a CPU-only host)."""
        if not isinstance(self.model, TableModel) or self.model.lut.header.device_kind != "cpu":
            return None
        h = self.model.lut.header
        with make_runner(h.runtime, h.device_kind, h.threads, h.batch, h.clock) as runner:
            stats = measure_networks(runner, archs, budget_s, progress=False)
        return [round(s.get(h.statistic), 4) for s in stats]
