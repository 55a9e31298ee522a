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


def test_step7s_seeds_record_keeps_what_the_arch_was_made_for_and_reads_as_a_seeds_cell() -> None:
    import importlib

    study = _study()
    tables = importlib.import_module("scripts.results_tables")
    figures = {"test_top1": {"seed0": 0.9452, "seed1": 0.944}, "chosen": "seed0", "seeds_test_mean": 0.9446}
    figures["seeds_test_binomial95"] = [0.9414, 0.9478]
    today = {"protocol": {"hardware": "cpu", "net": "cpu_0.75", "seeds": [0, 1, 2], "bundled_seed": 1}}
    record = study.step7_protocol(figures, today)
    assert (record["hardware"], record["net"], record["seeds"], record["bundled_seed"]) == (
        "cpu",
        "cpu_0.75",
        [0, 1],
        0,
    )
    assert record["test_top1_per_seed"] == [0.9452, 0.944] and record["test_top1_mean_ci"] == [0.9446, 0.9414, 0.9478]
    assert tables.seeds_cell({"protocol": record}) == "94.46% [94.14, 94.78] (2 seeds)"
    baseline = study.step7_protocol(figures | {"chosen": "seed1"}, {})
    assert "hardware" not in baseline and baseline["bundled_seed"] == 1


def test_step7_bundle_refuses_to_run_before_step7_has_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = _study()
    monkeypatch.setattr(study, "RESULTS", tmp_path / "finetune_study.json")
    (tmp_path / "finetune_study.json").write_text(json.dumps({"step4": {}}))
    monkeypatch.setattr(study.subprocess, "run", lambda *a, **k: pytest.fail("ran something"))
    with pytest.raises(SystemExit, match="step 7 has not finished"):
        study.step7_bundle()


def test_step4s_choice_comes_back_from_git_as_it_was_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    study = _study()
    repo = tmp_path / "repo"
    run = repo / "checkpoints" / "finetune_zoo" / "net_zoo_s1"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"arch": 1}')
    (run / "model.safetensors").write_bytes(bytes(range(256)) * 4)  # binary: no text conversion on the way
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "step 4"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([*git, "rm", "-rq", "checkpoints"], check=True)  # step 4 ended: its runs left the tree
    monkeypatch.setattr(study, "ROOT", repo)
    monkeypatch.setattr(study, "CARRY", repo / "checkpoints" / "finetune_zoo")
    monkeypatch.setattr(study, "STEP4_CARRIED_AT", commit)
    folder = study.step4_choice("net", "seed1", tmp_path / "out")
    assert (folder / "model.safetensors").read_bytes() == bytes(range(256)) * 4
    assert (folder / "config.json").read_text() == '{"arch": 1}'
    assert study.step4_choice("net", "today", tmp_path / "x") == repo / "zoo" / "pretrained" / "net"


def test_step6cs_rule_wants_a_gain_of_the_mean_and_a_kept_largest_subnet_and_prefers_the_smaller_lr() -> None:
    choose = _study().gentle_choice
    bundled = {"val_top1_largest": 0.9434, "mean": 0.9349}

    def arm(mean: float, largest: float) -> dict:
        return {"mean": mean, "val_top1_largest": largest}

    assert choose({"0.01": arm(0.9359, 0.9424), "0.02": arm(0.9358, 0.9500)}, bundled) == 0.01  # both at the edge
    assert choose({"0.01": arm(0.9358, 0.9434)}, bundled) is None  # gains 0.09 points only
    assert choose({"0.01": arm(0.9400, 0.9423)}, bundled) is None  # its largest subnet lost 0.11 points
    assert choose({"0.01": arm(0.9360, 0.9434), "0.02": arm(0.9371, 0.9434)}, bundled) == 0.02  # 0.11 points higher
    assert choose({"0.01": arm(0.9360, 0.9434), "0.02": arm(0.9370, 0.9434)}, bundled) == 0.01  # within 0.1: smaller
