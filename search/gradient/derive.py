"""Deriving the searched net from the architecture distribution.

The latency loss acts on the expected latency E[LAT]; the derived net is one path, the per-layer argmax, and the
two can part: with spread distributions the argmax may cost more than E[LAT], hence more than the target. Then
the derived net is the most probable path (max sum of log p) whose predicted latency is within the target: a
multiple-choice knapsack, solved exactly by keeping, layer by layer, only the Pareto-optimal partial paths
(cheaper or more probable than every other). With latency additive over layers (every model here is), this
needs no rounding of costs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def most_probable_within(
    probs: Sequence[Sequence[float]], costs: Sequence[Sequence[float]], fixed: float, limit: float
) -> list[int] | None:
    """The candidate index per layer maximizing prod p subject to ``fixed + sum cost <= limit``; candidates with
    p = 0 (padding, masked ops) are never taken. None when no path fits."""
    if len(probs) != len(costs):
        raise ValueError(f"{len(probs)} rows of probabilities, {len(costs)} of costs")
    options = [[j for j, p in enumerate(row) if p > 0] for row in probs]
    # the cheapest way to finish from layer l on: partial paths that cannot fit any more are dropped early
    rest = [0.0] * (len(costs) + 1)
    for layer in range(len(costs) - 1, -1, -1):
        rest[layer] = rest[layer + 1] + min((costs[layer][j] for j in options[layer]), default=math.inf)
    front: list[tuple[float, float, list[int]]] = [(fixed, 0.0, [])]  # (cost, log p, path)
    for layer, (p_row, c_row) in enumerate(zip(probs, costs, strict=True)):
        grown = [
            (cost + c_row[j], logp + math.log(p_row[j]), [*path, j])
            for cost, logp, path in front
            for j in options[layer]
            if cost + c_row[j] + rest[layer + 1] <= limit
        ]
        grown.sort(key=lambda t: (t[0], -t[1]))
        front, best = [], -math.inf
        for item in grown:  # by rising cost: keep each path more probable than every cheaper one
            if item[1] > best:
                front.append(item)
                best = item[1]
    return max(front, key=lambda t: t[1])[2] if front else None
