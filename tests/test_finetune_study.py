"""scripts/finetune_study.py: the seed figures that every step's verdict quotes."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]


def _study():
    spec = importlib.util.spec_from_file_location("finetune_study", ROOT / "scripts" / "finetune_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["finetune_study"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_seed_figures_pool_both_seeds_images_for_the_interval() -> None:
    study = _study()
    a = np.array([True] * 900 + [False] * 100)  # 90%
    b = np.array([True] * 800 + [False] * 200)  # 80%
    figures = study.seed_figures([a, b])
    half = 1.96 * math.sqrt(0.85 * 0.15 / 2000)  # 2,000 images: one seed's 1,000 would widen it by sqrt(2)
    assert figures == {
        "seeds_test_mean": 0.85,
        "seeds_test_binomial95": [round(0.85 - half, 4), round(0.85 + half, 4)],
        "seeds_test_range": [0.8, 0.9],
    }
