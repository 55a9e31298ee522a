"""``specialize --finetune-min``: the budget holds, bad values are refused in one line, an interrupted fine-tune
leaves no folder that loads, the teacher and the schedule matter; and what specialize prints a user."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_hub_supernet
import torch

from search.cli import main as search_main
from search.elastic.finetune import DataRecipe, FinetuneConfig, FinetuneError, finetune, lr_at
from search.elastic.specialize import Specialized
from search.elastic.store import load_supernet
from zoo.registry import weights_dir_info

ROOT = Path(__file__).resolve().parents[1]
DATA = DataRecipe(dataset="synthetic", val_size=200, limit_train=256)
supernet = test_hub_supernet.supernet  # the fixture: a tiny trained supernet with its predictor


def _specialize(supernet: Path, out: Path, *extra: str) -> list[str]:
    args = ["specialize", "--supernet", str(supernet), "--lut", "cpu", "--factor", "0.9", "--out", str(out)]
    return [*args, "--population", "8", "--generations", "2", "--top", "1", "--teacher", "none", *extra]


def _net(supernet: Path) -> torch.nn.Module:
    model, _ = load_supernet(supernet)
    return model.extract(model.space.baseline())


def test_the_budget_holds_and_the_weights_move(supernet: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    budget = 0.1  # minutes
    assert search_main(_specialize(supernet, tmp_path / "net", "--finetune-min", str(budget), "--no-progress")) == 0
    out = capsys.readouterr().out.strip().splitlines()
    tuned = json.loads(out[-1])["finetune"]
    assert tuned["steps"] >= 1, tuned
    # data, training and the final pass fit the budget, and most of it was used (a step may not fit the rest)
    assert 0.4 * 60 * budget <= tuned["seconds"] <= 60 * budget + 1.0, tuned
    info = weights_dir_info(tmp_path / "net")
    assert "fine-tuned" in info.source and info.metrics["val_top1"] == tuned["val_top1"]
    assert "on the validation split" in out[0] and "test top-1" in out[0]


class FakeClock:
    """Time that advances ``tick`` seconds at every reading: a run's length depends on its budget alone."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_the_clock_sizes_the_run_and_a_step_that_cannot_fit_is_not_started(supernet: Path) -> None:
    def steps(minutes: float) -> int:
        cfg = FinetuneConfig(minutes=minutes, batch_size=32, progress=False, reserve_s=1.0)
        return finetune(_net(supernet), cfg, DATA, clock=FakeClock(0.5)).steps

    few, more = steps(0.5), steps(1.0)
    assert few >= 10 and 1.8 * few <= more <= 2.3 * few, (few, more)  # twice the training time, twice the steps
    assert steps(0.03) == 0  # 1.8 s, less the reserve: no room for a step


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--finetune-min", "-1"], "--finetune-min must be 0..1440 minutes"),
        (["--finetune-min", "nan"], "--finetune-min must be 0..1440 minutes"),
        (["--finetune-min", "inf"], "--finetune-min must be 0..1440 minutes"),
        (["--finetune-min", "1e9"], "--finetune-min must be 0..1440 minutes"),
        (["--finetune-min", "1", "--finetune-lr", "0"], "--finetune-lr must be finite and > 0"),
        (["--finetune-min", "1", "--teacher", "no_such_net"], "--teacher 'no_such_net' is neither"),
        (["--finetune-min", "1", "--teacher", "baseline"], "the zoo has no trained baseline of this space and dataset"),
    ],
)
def test_bad_fine_tune_options_are_refused_in_one_line(
    supernet: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    args = _specialize(supernet, tmp_path / "x")
    args = args[: args.index("--teacher")] + extra  # this test's --teacher, if any, replaces 'none'
    assert search_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_an_interrupted_fine_tune_leaves_no_folder_that_loads(supernet: Path, tmp_path: Path) -> None:
    out = tmp_path / "net"
    cmd = [sys.executable, "-m", "search", *_specialize(supernet, out, "--finetune-min", "5")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        for line in proc.stderr:  # progress lines: wait until training has started
            if "s of training" in line or time.monotonic() > deadline:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with pytest.raises(ValueError):
        weights_dir_info(out)
    assert not out.exists() or not any(p.name == "config.json" for p in out.iterdir())


def test_the_teacher_and_the_lr_change_the_result(supernet: Path, tmp_path: Path) -> None:
    """Same seed and steps: no teacher, either of two teachers, or another lr give three other nets: each is used."""
    teachers = [tmp_path / "largest", tmp_path / "smallest"]
    for folder in teachers:
        args = ["extract", "--supernet", str(supernet), "--subnet", folder.name, "--out", str(folder)]
        assert search_main(args) == 0

    def tuned(**kw: object) -> torch.Tensor:
        net = _net(supernet)
        finetune(net, FinetuneConfig(steps=4, batch_size=32, progress=False, **kw), DATA)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    plain = tuned()
    assert torch.equal(plain, tuned())  # deterministic: the comparisons below mean something
    by_teacher = [tuned(teacher=str(folder), kd_weight=5.0) for folder in teachers]
    assert not torch.allclose(plain, by_teacher[0]) and not torch.allclose(by_teacher[0], by_teacher[1])
    assert not torch.allclose(plain, tuned(lr=0.2))


def test_the_schedule_warms_up_then_decays_to_zero() -> None:
    assert lr_at(0.025, 0.05) == pytest.approx(0.5)
    assert lr_at(0.05, 0.05) == pytest.approx(1.0)
    values = [lr_at(f / 100, 0.05) for f in range(5, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values)) and values[-1] == pytest.approx(0.0)
    assert lr_at(0.5, 0.05) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.45 / 0.95)))


def test_fine_tune_config_refuses_both_or_neither_length() -> None:
    with pytest.raises(FinetuneError, match="exactly one"):
        FinetuneConfig(minutes=1, steps=10).validate()
    with pytest.raises(FinetuneError, match="exactly one"):
        FinetuneConfig().validate()


def test_the_comparison_line_says_speed_and_accuracy_on_one_split() -> None:
    record = Specialized(
        subnet="d", latency=0.5, unit="ms", limit=0.52, predicted_top1=0.94, val_top1=0.941, search="evolution",
        evaluations=100, search_seconds=1.0, seconds=9.0, out="x", test_top1=0.9441, baseline="fmnist_mobilenetv2",
        baseline_latency=0.69, baseline_test_top1=0.9459,
    )  # fmt: skip
    line = record.comparison()
    assert line is not None and "1.38x faster" in line and "94.41% vs 94.59%" in line and "-0.18 points" in line
    assert Specialized(**{**record.__dict__, "baseline": None}).comparison() is None
