"""Paired statistics for comparing nets honestly: Kendall's tau-b with a bootstrap interval (rank agreement),
the exact McNemar test (two nets on the same images) and Student-t intervals (a mean over seeds)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties counted as in scipy): +1 same order, -1 reversed, 0 unrelated."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"kendall_tau needs two equal-length sequences of >= 2 items, got {len(a)} and {len(b)}")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denom if denom else 0.0


def bootstrap_tau(
    a: Sequence[float], b: Sequence[float], samples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of tau over resampled pairs (a resample with one distinct pair is skipped)."""
    rng = random.Random(seed)
    n, taus = len(a), []
    for _ in range(samples):
        idx = [rng.randrange(n) for _ in range(n)]
        if len(set(idx)) < 2:
            continue
        taus.append(kendall_tau([a[i] for i in idx], [b[i] for i in idx]))
    taus.sort()
    lo = taus[int((1 - level) / 2 * len(taus))]
    hi = taus[min(len(taus) - 1, int((1 + level) / 2 * len(taus)))]
    return lo, hi


def mcnemar(base_right: np.ndarray, net_right: np.ndarray) -> dict[str, float | int]:
    """Exact two-sided McNemar test of two nets judged on the same images (binomial on those only one gets right)."""
    if base_right.shape != net_right.shape:
        raise ValueError(f"paired answers differ in length: {base_right.shape} vs {net_right.shape}")
    b, c = int(np.sum(base_right & ~net_right)), int(np.sum(net_right & ~base_right))
    tail = sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c)
    return {"baseline_only": b, "net_only": c, "images": len(base_right), "p": round(min(1.0, 2 * tail), 4)}


# two-sided 95% Student-t quantiles by degrees of freedom (seeds - 1)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of a few values (e.g. one figure per seed)."""
    n = len(values)
    if not 2 <= n <= 10:
        raise ValueError(f"t_interval takes 2..10 values, got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = _T975[n - 1] * sd / math.sqrt(n)
    return mean, mean - half, mean + half
