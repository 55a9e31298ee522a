"""The long commands say what they are doing on stderr, and ``--no-progress`` silences them (issue 40: minutes of
silence on a 2-core machine): ``zoo eval``'s batch bar and ``proxyless export``'s step lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from export.cli import main as export_main
from zoo.arch import ArchSpec, BlockSpec
from zoo.cli import main as zoo_main
from zoo.datasets import fmnist_dir

TINY = ArchSpec(
    name="tiny",
    blocks=tuple(BlockSpec.parse(b) for b in ("mb1_k3_s1_c8", "zero")),
    stem_channels=8,
    stem_stride=1,
    feature_mix=16,
    in_chans=1,
    input_size=28,
    num_classes=10,
)
STEP = re.compile(r"^\[ *\d+\.\d s\] \S")
needs_fmnist = pytest.mark.skipif(
    not (fmnist_dir() / "t10k-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST is not installed"
)


@needs_fmnist
def test_zoo_eval_shows_a_batch_bar_unless_no_progress(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", "fmnist_proxyless_cpu", "--limit", "40", "--batch-size", "10"]
    assert zoo_main(argv) == 0
    captured = capsys.readouterr()
    assert "eval fmnist_proxyless_cpu" in captured.err and "4/4" in captured.err
    assert "eval fmnist_proxyless_cpu" not in captured.out  # stdout keeps the result lines only
    assert zoo_main([*argv, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_export_says_each_step_unless_no_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch = tmp_path / "tiny.json"
    arch.write_text(TINY.to_json())
    argv = [str(arch), "--formats", "torchscript", "--parity-images", "8", "--latency-calls", "1"]
    assert export_main([*argv, "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines and all(STEP.match(line) for line in lines), lines
    steps = [line.split("] ", 1)[1] for line in lines]
    assert steps[0].startswith("tiny: 8 parity images")
    assert steps[1:] == [
        "torchscript: writing",
        "tiny.pt: parity on torchscript",
        "latency: eager PyTorch and 1 runtime(s), 1 batch-1 calls each",
    ]
    assert not any(STEP.match(line) for line in captured.out.splitlines())
    assert export_main([*argv, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
