"""ProxylessNAS-R: REINFORCE on alpha with a latency-aware reward.

Per alpha step, M paths are sampled from softmax(alpha) and evaluated (no gradient) on one validation batch;
reward R = accuracy * (T / LAT) ** w with LAT the latency model's prediction of the path. With a moving-average
baseline b, the policy-gradient loss is -mean_m (R_m - b) log p(path_m), whose gradient on alpha is
mean_m (R_m - b) (p - onehot(path_m)) per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from search.gradient.gates import frozen_bn_stats, sample_paths
from search.gradient.objective import LatencyObjective
from search.gradient.supernet import Supernet

Reduce = Callable[[torch.Tensor], torch.Tensor]


def reward(acc: float, latency: float, target: float, tradeoff: float) -> float:
    """acc * (T / LAT) ** w: above-target latency lowers the reward, below-target raises it."""
    return acc * (target / latency) ** tradeoff


@dataclass
class Reinforce:
    """The policy-gradient estimator and its baseline (which is part of a run's checkpoint)."""

    samples: int
    tradeoff: float
    baseline_decay: float
    baseline: float | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"REINFORCE needs at least one sampled net per step, got {self.samples}")

    @torch.no_grad()
    def evaluate(
        self,
        supernet: Supernet,
        x: torch.Tensor,
        y: torch.Tensor,
        probs_cpu: torch.Tensor,
        generator: torch.Generator,
        reduce_sum: Reduce,
    ) -> tuple[list[list[int]], list[float]]:
        """Sample paths and their accuracy on (x, y); ``reduce_sum`` sums the counts over ranks."""
        paths = [sample_paths(probs_cpu, generator) for _ in range(self.samples)]
        with frozen_bn_stats(supernet):
            correct = torch.stack([(supernet(x, p).argmax(1) == y).sum() for p in paths]).float()
        total = torch.full((1,), float(len(y)), device=correct.device)
        counts = reduce_sum(torch.cat([correct, total])).cpu()  # one host sync per alpha step
        return paths, (counts[:-1] / counts[-1]).tolist()

    def loss(
        self, supernet: Supernet, paths: Sequence[Sequence[int]], accs: Sequence[float], objective: LatencyObjective
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Update the baseline with this step's rewards; return the policy-gradient loss and the step's figures."""
        lats = [objective.path_latency(p) for p in paths]
        rewards = [reward(a, lat, objective.target, self.tradeoff) for a, lat in zip(accs, lats, strict=True)]
        mean = sum(rewards) / len(rewards)
        self.baseline = (
            mean if self.baseline is None else self.baseline_decay * self.baseline + (1 - self.baseline_decay) * mean
        )
        logp = torch.log_softmax(supernet.alpha.masked_fill(~supernet.valid, float("-inf")), dim=1)
        index = torch.tensor(paths, device=logp.device).T  # [L, M]
        path_logp = logp.gather(1, index).sum(0)
        advantage = torch.tensor([r - self.baseline for r in rewards], device=logp.device)
        stats = {"reward": mean, "baseline": self.baseline, "acc": sum(accs) / len(accs), "lat": sum(lats) / len(lats)}
        return -(advantage * path_logp).mean(), stats
