"""The gpu-* make targets and scripts/gpu_session.py, smoke-run on CPU: each device call stops within its minutes,
its state comes back as one checked archive, and the next bare machine resumes from it instead of starting over."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from zoo.datasets import fmnist_dir

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "scripts" / "gpu_session.py"
TINY = "--limit-train 512 --epochs 1 --val-size 500 --calib-images 64 --threads 1 --no-progress"


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    """A bare checkout's root as the device call sees it: the Makefile, the ranking's pinned subnets, nothing run."""
    root = tmp_path / "repo"
    (root / "benchmarks" / "results" / "elastic_ranking").mkdir(parents=True)
    shutil.copy(ROOT / "Makefile", root)
    (root / "benchmarks" / "elastic_ranking.py").symlink_to(ROOT / "benchmarks" / "elastic_ranking.py")
    pinned = ROOT / "benchmarks" / "results" / "elastic_ranking" / "subnets.json"
    shutil.copy(pinned, root / "benchmarks" / "results" / "elastic_ranking")
    (tmp_path / "out").mkdir()
    return root


def call(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PY": sys.executable, "PYTHONPATH": str(ROOT), "GPU_DEVICE": "cpu", "OUT": str(root.parent / "out")}
    base["PROXYLESS_FMNIST_DIR"] = str(fmnist_dir())
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=root,
        env={**os.environ, **base, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def names(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return {Path(n).name for n in tar.getnames()}


def test_a_supernet_stopped_by_its_minutes_resumes_on_a_bare_machine_from_the_state_kept(machine: Path) -> None:
    out = machine.parent / "out"
    first = call(machine, "run", "gpu-fmnist-supernet", GPU_MIN="0.001", GPU_ARGS=TINY)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["target"] == "gpu-fmnist-supernet" and summary["rc"] == 0
    archive = out / "gpu-fmnist-supernet.tar.gz"
    assert summary["state_bytes"] == archive.stat().st_size
    held = names(archive)
    assert "checkpoint.pt" in held and "metrics.json" not in held and "tb" not in held  # stopped, not finished
    assert (out / "gpu-fmnist-supernet.log").is_file()

    kept = call(machine, "keep", str(out))
    assert kept.returncode == 0 and json.loads(kept.stdout)["kept"] == ["gpu-fmnist-supernet.tar.gz"]
    assert (machine / ".carry" / "gpu-fmnist-supernet.tar.gz").is_file()
    shutil.rmtree(machine / "runs")  # the next call starts on a bare machine: only .carry travels
    second = call(machine, "run", "gpu-fmnist-supernet", GPU_MIN="30", GPU_ARGS=TINY)
    assert second.returncode == 0, second.stderr
    assert "gpu-fmnist-supernet/checkpoint.pt at step 1 (epoch 1 of 1)" in second.stdout  # resumed, not redone
    metrics = json.loads((machine / "runs" / "gpu-fmnist-supernet" / "metrics.json").read_text())
    assert metrics["finished"] and metrics["steps"] == 2
    assert "supernet.safetensors" in names(archive)


def test_the_ranking_keeps_its_results_and_not_the_finished_subnets_weights(machine: Path) -> None:
    out = machine.parent / "out"
    done = call(machine, "run", "gpu-elastic-ranking", GPU_MIN="0.5", GPU_ARGS="--limit-train 256 --epochs 1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["rc"] == 0
    with tarfile.open(out / "gpu-elastic-ranking.tar.gz") as tar:
        held = tar.getnames()
    results = "benchmarks/results/elastic_ranking_40ep"
    assert {f"{results}/subnets.json", f"{results}/standalone.csv"} <= set(held)
    assert list((machine / "runs").rglob("*.safetensors")), "no subnet finished: nothing to leave out"
    assert not any(n.endswith(".safetensors") for n in held)


def test_bad_input_is_one_line_before_any_training(machine: Path, tmp_path: Path) -> None:
    no_out = call(machine, "run", "gpu-fmnist-supernet", OUT="")
    assert no_out.returncode == 1 and no_out.stderr.strip().startswith("error: $OUT must name")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_data = call(machine, "run", "gpu-fmnist-supernet", PROXYLESS_FMNIST_DIR=str(empty))
    assert no_data.returncode == 1 and "run `make gpu-data` here" in no_data.stderr
    outside = call(machine, "run", "gpu-fmnist-supernet", GPU_RUNS=str(tmp_path / "elsewhere"))
    assert outside.returncode == 1 and "must be a path inside the repository" in outside.stderr
    assert not (machine / "runs").exists()
    # a state archive that does not match its checksum is refused, not extracted
    (machine / ".carry").mkdir()
    broken = machine / ".carry" / "gpu-fmnist-supernet.tar.gz"
    with tarfile.open(broken, "w:gz") as tar:
        tar.add(str(ROOT / "Makefile"), arcname="runs/planted")
    broken.with_name(broken.name + ".sha256").write_text("0" * 64 + "\n")
    refused = call(machine, "run", "gpu-fmnist-supernet")
    assert refused.returncode == 1 and "does not match its .sha256" in refused.stderr
    assert not (machine / "runs" / "planted").exists()
    nothing = call(machine, "keep", str(tmp_path / "empty"))
    assert nothing.returncode == 1 and "holds no state archive" in nothing.stderr
