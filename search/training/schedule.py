"""The cosine learning-rate schedule, defined once for training (``training.train``, ``training.recipe``) and the
gradient search (``gradient.search``)."""

from __future__ import annotations

import math


def cosine(progress: float) -> float:
    """Factor from 1 at ``progress`` 0 down to 0 at ``progress`` 1 (clamped to [0, 1])."""
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
