"""Rank agreement with an honest interval: Kendall's tau-b and a percentile bootstrap over the paired items."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


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
