"""proxyless search compare: the committed 1.0x searches on each other's tables (the figures of their README), and
the comparison the pipeline writes after its searches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from search.cli import main
from search.gradient.compare import PairDiff, compare_runs
from zoo.datasets import DatasetError, load_arrays

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "fmnist_search_cpu_1x"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_the_committed_searches_differ_in_one_or_two_layers_and_the_mobile_net_is_not_the_fastest_there() -> None:
    report = compare_runs({name: RUNS / name for name in ("cpu", "mobile", "gpu")})
    assert report.layers == 10
    assert report.pairs == [PairDiff("cpu", "mobile", 1), PairDiff("cpu", "gpu", 2), PairDiff("mobile", "gpu", 1)]
    nets = {net.name: net for net in report.nets}
    # docs/history.md; CPU on the table re-profiled 2026-12-05 (0.956, 1.103, 1.194 ms on the one searched with)
    want = {"cpu": (0.581, 7.123, 1.705), "mobile": (0.639, 7.885, 1.701), "gpu": (0.700, 8.556, 1.696)}
    for name, row in want.items():
        got = nets[name].latency
        assert (got["cpu"], got["mobile"], got["gpu"]) == pytest.approx(row, abs=6e-4)
    assert [nets[n].fastest_on_own_table for n in ("cpu", "mobile", "gpu")] == [True, False, True]
    assert nets["mobile"].model == "mobile" and nets["mobile"].target_latency == 8.049
    assert nets["cpu"].layers[7] == "mb3_k3_s1_c80_res" and nets["mobile"].layers[7] == "mb6_k7_s1_c80_res"


def test_compare_cli_writes_the_json_and_refuses_a_folder_without_a_search_record(tmp_path: Path, capsys) -> None:
    out = tmp_path / "compare.json"
    assert main(["compare", str(RUNS / "cpu"), str(RUNS / "gpu"), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text()) and printed["pairs"][0]["differing_layers"] == 2
    bare = tmp_path / "bare"
    bare.mkdir()
    arch = json.loads((RUNS / "cpu" / "arch.json").read_text())
    del arch["extra"]["search"]
    (bare / "arch.json").write_text(json.dumps(arch))
    shutil.copytree(RUNS / "gpu", tmp_path / "gpu")
    assert main(["compare", str(bare), str(tmp_path / "gpu")]) == 2
    assert "has no search record" in capsys.readouterr().err


@pytest.mark.slow
def test_the_pipelines_search_only_smoke_run_writes_the_comparison(tmp_path: Path) -> None:
    """`make fmnist-search`'s command, tiny: a shared warm-up, the cpu / mobile / gpu searches at 1.0x with the
    default loss and schedule (alpha lr 1e-2), and search/compare.json with every net on all three tables."""
    try:
        load_arrays("fashion-mnist", "train")
    except DatasetError as e:
        pytest.skip(f"no Fashion-MNIST here: {e}")
    out = tmp_path / "fm"
    cmd = [sys.executable, "scripts/fmnist_pipeline.py", "--smoke", "--device", "cpu", "--threads", "1"]
    cmd += ["--search-only", "--targets", "cpu,mobile,gpu", "--factor", "1.0", "--search-args", "--arch-lr 1e-2"]
    cmd += ["--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stdout[-3000:]
    report = json.loads((out / "search" / "compare.json").read_text())
    assert [net["name"] for net in report["nets"]] == ["cpu", "mobile", "gpu"]
    assert all(sorted(net["latency"]) == ["cpu", "gpu", "mobile"] for net in report["nets"])
    assert [(d["a"], d["b"]) for d in report["pairs"]] == [("cpu", "mobile"), ("cpu", "gpu"), ("mobile", "gpu")]
    assert "differ in" in (out / "pipeline.log").read_text()
    record = json.loads((out / "search" / "cpu" / "arch.json").read_text())["extra"]["search"]
    assert record["loss"] == "mul#ratio" and record["config"]["arch_skip_epochs"] == 1
    assert record["config"]["arch_lr"] == 1e-2 and record["config"]["arch_every"] == 5
    assert record["target_latency"] == json.loads((out / "targets.json").read_text())["cpu"]["baseline_ms"]
    assert len(record["convergence"]["entropy"]) == 2
