"""scripts/finetune_study.py: the seed figures that every step's verdict quotes."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

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


def _fake_specialize(calls: list[list[str]], subnet: str = "d2331-k7-e6"):
    """Stands in for ``subprocess.run`` of ``specialize``: checks it writes into a fresh folder, then writes it."""

    def run(cmd: list[str], check: bool, cwd: Path) -> None:
        calls.append(cmd)
        out = cwd / cmd[cmd.index("--out") + 1]
        assert not out.exists(), "specialize needs a new or empty folder"
        out.mkdir(parents=True)
        minutes = float(cmd[cmd.index("--finetune-min") + 1])
        tuned = {"steps": int(10 * minutes), "seconds": 60.0 * minutes} if minutes else None
        record = {"subnet": subnet, "test_top1": 0.93 + minutes / 1000, "seconds": 5.0, "finetune": tuned}
        (out / "specialize.json").write_text(json.dumps(record))

    return run


def _curve_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    study = _study()
    monkeypatch.setattr(study, "ROOT", tmp_path)
    monkeypatch.setattr(study, "RUNS", tmp_path / "runs" / "finetune")
    monkeypatch.setattr(study, "CURVE_CARRY", tmp_path / "checkpoints" / "finetune_curve")
    return study


def test_a_curve_point_cut_short_is_made_again_from_nothing_and_a_finished_one_is_carried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _curve_study(tmp_path, monkeypatch)
    void = study.RUNS / "curve_f0.6_m5"
    void.mkdir(parents=True)
    (void / "checkpoint.pt").write_bytes(b"half a fine-tune")  # a session's end stopped it on the clock
    calls: list[list[str]] = []
    monkeypatch.setattr(study.subprocess, "run", _fake_specialize(calls))
    point = study.curve_point(0.6, 5)
    assert point == {"subnet": "d2331-k7-e6", "test_top1": 0.935, "seconds": 5.0, "finetune_steps": 50,
                     "finetune_seconds": 300.0}  # fmt: skip
    assert calls[0][calls[0].index("--factor") + 1] == "0.6" and "--lut" in calls[0]
    assert (study.CURVE_CARRY / "curve_f0.6_m5.json").is_file()
    shutil.rmtree(study.RUNS)  # the next session: only what git carried
    assert study.curve_point(0.6, 5) == point and len(calls) == 1


def test_the_curve_stops_when_one_factors_points_chose_different_subnets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _curve_study(tmp_path, monkeypatch)
    calls: list[list[str]] = []
    monkeypatch.setattr(study.subprocess, "run", _fake_specialize(calls))
    for factor in study.CURVE_FACTORS:
        study.curve_point(factor, 0)
    record = study.CURVE_CARRY / "curve_f0.6_m0.json"
    record.write_text(record.read_text().replace("d2331-k7-e6", "d2331-k5-e6"))
    with pytest.raises(SystemExit, match=r"the 0\.6x points chose different subnets"):
        study.step5()
    assert all("--finetune-min" in c for c in calls) and len(calls) == 3 + len(study.CURVE_MINUTES) - 1
