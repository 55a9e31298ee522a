"""Profiling and validation on a tiny space (milliseconds per op), resume after interruption, runtimes, CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from search import cli
from search.latency.lut import LatencyError, Lut
from search.latency.ops import build_op, is_timed, space_ops
from search.latency.predict import TableModel
from search.latency.profile import profile_ops
from search.latency.runtimes import make_runner, measure
from search.latency.validate import calibrate, metrics, sample_archs, signature, validate
from search.space import SPACES, SearchSpace

TINY = SearchSpace(
    name="tiny",
    widths=(8, 8),
    depths=(1, 2),
    strides=(2, 1),
    stem_channels=4,
    stem_stride=1,
    first_block="mb1_k3_s1_c4",
    feature_mix=16,
    in_chans=1,
    input_size=8,
    num_classes=3,
    kernels=(3, 5),
)
FAST = {"budget_s": 0.003, "warmup_s": 0.0, "progress": False}


class Interrupt(Exception):
    pass


def test_tiny_space_ops():
    keys = space_ops(TINY)
    assert [k.op for k in keys[:2]] == ["stem", "mbconv"] and [k.op for k in keys[-2:]] == ["feature_mix", "classifier"]
    assert sum(k.op == "zero" for k in keys) == 1, "layers of equal shape share entries"
    assert len(keys) == 2 + 4 + 5 + 2


def test_profile_resumes_after_interruption(tmp_path):
    out = tmp_path / "tiny.json"
    done = []

    def stop_after_three(entry):
        done.append(entry)
        if len(done) == 3:
            raise Interrupt

    with make_runner("torch", "cpu", 1, 2) as runner:
        with pytest.raises(Interrupt):
            profile_ops(TINY, runner, out, after_entry=stop_after_three, **FAST)
        partial = Lut.load(out)
        assert list(partial.entries.values()) == done

        prepared = []
        real_prepare = runner.prepare
        runner.prepare = lambda module, shape: prepared.append(shape) or real_prepare(module, shape)
        full = profile_ops(TINY, runner, out, **FAST)
    keys = space_ops(TINY)
    assert set(full.entries) == set(keys)
    assert len(prepared) == sum(is_timed(k) for k in keys[3:]), "only the missing ops are timed"
    for entry in done:
        assert full.entries[entry.key] == entry, "entries measured before the interruption are kept as they were"
    again = Lut.load(out)
    assert again.entries == full.entries
    assert again.header.batch == 2 and again.header.clock == "thread_cpu"
    assert all(e.count >= 10 and e.median_ms > 0 for e in again.entries.values() if is_timed(e.key))


def test_resume_refuses_a_table_measured_differently(tmp_path):
    out = tmp_path / "tiny.json"
    with make_runner("torch", "cpu", 1, 1) as runner:
        profile_ops(TINY, runner, out, **FAST)
    with make_runner("torch", "cpu", 1, 4) as runner, pytest.raises(LatencyError, match="batch=1"):
        profile_ops(TINY, runner, out, **FAST)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino", "onnxruntime-int8"])
def test_registry_runners_time_an_op(runtime):
    """Any runtime of the registry profiles (OpenVINO, a runtime added through the registry alone, included)."""
    from zoo.runtimes import unavailable

    if unavailable(runtime):
        pytest.skip(f"{runtime}: {unavailable(runtime)}")
    key = space_ops(TINY)[2]
    with make_runner(runtime, "cpu", 1, 1) as runner:
        stats = measure(runner.prepare(build_op(key), key.input), budget_s=0.01, warmup_s=0.0)
    assert stats.count >= 10 and 0 < stats.median_ms < 50


def test_profiler_times_the_onnx_graph_that_export_ships(tmp_path, capsys):
    """issue 28: a latency table and `proxyless export` get the same exporter and opset, for an op and a network,
    because both build through the runtime registry with the options export ships."""
    from export.cli import main as export_main
    from search.latency.validate import sample_archs
    from zoo.network import ProxylessNet
    from zoo.runtimes import BuildOptions
    from zoo.runtimes.onnx import onnx_provenance

    arch = sample_archs(TINY, 1, seed=0)[0]
    shape = (arch.in_chans, arch.input_size, arch.input_size)
    with make_runner("onnxruntime", "cpu", 1, 1) as runner:
        runner.prepare(build_op(space_ops(TINY)[1]), space_ops(TINY)[1].input)
        runner.prepare(ProxylessNet(arch), shape)
        profiled = {onnx_provenance(p) for p in runner.artefact_dir.glob("*.onnx")}
        count, notes = len(list(runner.artefact_dir.glob("*.onnx"))), runner.build_notes()
    (tmp_path / "arch.json").write_text(arch.to_json())
    argv = [str(tmp_path / "arch.json"), "--formats", "onnx", "--out", str(tmp_path / "out"), "--no-slim"]
    assert export_main([*argv, "--parity-images", "16", "--latency-calls", "0", "--no-progress"]) == 0
    shipped = tmp_path / "out" / f"{arch.name}.onnx"
    default = BuildOptions()
    assert count == 2
    assert profiled | {onnx_provenance(shipped)} == {(default.onnx_exporter, default.opset)}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    build = report["artefacts"][0]["build"]
    assert (build["exporter"], build["opset"]) == (notes["onnx_exporter"], notes["opset"]) == ("dynamo", 18)


def test_runner_argument_errors():
    with pytest.raises(LatencyError, match="thread_cpu needs --threads 1"):
        make_runner("torch", "cpu", 2, 1, clock="thread_cpu")
    with pytest.raises(LatencyError, match="runs on cuda, not cpu"):
        make_runner("tensorrt", "cpu", 1, 1)
    with pytest.raises(LatencyError, match="unknown runtime 'mxnet'"):
        make_runner("mxnet", "cpu", 1, 1)
    with make_runner("openvino", "cpu", 1, 1) as runner:  # computes in its own threads: thread CPU time misses it
        assert runner.clock == "wall"
    with make_runner("torch", "cpu", 2, 1) as runner:
        assert runner.clock == "wall" and torch.get_num_threads() == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_profile_and_validate(tmp_path, monkeypatch):
    monkeypatch.setitem(SPACES, "tiny", TINY)
    out = tmp_path / "tiny_cuda.json"
    with make_runner("torch", "cuda", 1, 8) as runner:
        lut = profile_ops(TINY, runner, out, **FAST)
        assert runner.clock == "cuda_events"
    assert lut.header.device == torch.cuda.get_device_name()
    result = validate(out, 3, seed=0, budget_s=0.02, rounds=2, png=None, progress=False)
    assert result["n"] == 3 and result["runtime"] == "torch"


def test_calibrate_and_validate_tiny(tmp_path, monkeypatch):
    monkeypatch.setitem(SPACES, "tiny", TINY)
    out = tmp_path / "tiny.json"
    with make_runner("torch", "cpu", 1, 1) as runner:
        lut = profile_ops(TINY, runner, out, **FAST)
        cal = calibrate(lut, TINY, runner, n=3, budget_s=0.02, progress=False)
    lut.with_header(calibration=cal).save(out)
    assert len(cal["archs"]) == 3 and len(cal["measured_ms"]) == 3
    png = tmp_path / "scatter.png"
    result = validate(out, 4, seed=0, budget_s=0.02, rounds=2, png=png, progress=False)
    assert result["n"] == 4 and set(result) >= {"mape", "spearman", "rmse_ms", "overhead_ms"}
    assert result["overhead_ms"] == cal["overhead_ms"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    details = json.loads(png.with_suffix(".json").read_text())
    assert not set(details["archs"]) & set(cal["archs"]), "validation archs are not the calibration archs"
    model = TableModel(Lut.load(out), "tiny")
    assert model.overhead == cal["overhead_ms"]


def test_cli_profile_validate_and_latency(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(SPACES, "tiny", TINY)
    out = tmp_path / "tiny.json"
    args = ["profile", "--space", "tiny", "--runtime", "torch", "--out", str(out), "--budget-s", "0.003"]
    args += ["--warmup-s", "0", "--calib-archs", "2", "--calib-budget-s", "0.01", "--no-progress"]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["entries"] == len(space_ops(TINY)) and summary["overhead_ms"] is not None

    args = ["validate-lut", "--lut", str(out), "--archs", "3", "--budget-s", "0.01", "--rounds", "2"]
    assert cli.main([*args, "--json", "--no-progress"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    details = json.loads(out.with_suffix(".validate.json").read_text())
    recomputed = metrics(np.array(details["predicted_ms"]), np.array(details["measured_ms"]))
    assert last["n"] == len(details["archs"]) == 3  # the printed figures are those of the recorded timings
    for k, v in recomputed.items():  # the recorded timings are rounded: one unit of the printed 4th decimal apart
        assert last[k] == pytest.approx(v, abs=1.5e-4), k
    assert out.with_suffix(".validate.png").exists()

    arch = tmp_path / "arch.json"
    arch.write_text(TINY.uniform(6, 5, "tiny_k5e6").to_json())
    assert cli.main(["latency", str(arch), "--lut", str(out), "--json"]) == 0
    printed = capsys.readouterr().out
    assert "mb6_k5_s2_c8" in printed and json.loads(printed.strip().splitlines()[-1])["unit"] == "ms"


def test_cli_errors_are_one_line(tmp_path, capsys):
    code = cli.main(["latency", "proxyless_mobile", "--lut", str(tmp_path / "none.json")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: latency target") and "none.json" in err[0], err


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available(),
    reason="checks the refusal where TensorRT or CUDA is missing",
)
def test_tensorrt_without_tensorrt_exits_2(tmp_path, capsys):
    args = ["profile", "--space", "fmnist", "--device", "cuda", "--runtime", "tensorrt", "--batch", "8"]
    assert cli.main([*args, "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tensorrt" in err[0]
    assert not (tmp_path / "t.json").exists()


def test_resume_refuses_another_statistic(tmp_path):
    out = tmp_path / "t.json"
    with make_runner("torch", "cpu", 1, 1) as runner:
        profile_ops(TINY, runner, out, statistic="min", **FAST)
        before = out.read_text()
        with pytest.raises(LatencyError, match="statistic='min', this profile has 'median'"):
            profile_ops(TINY, runner, out, statistic="median", **FAST)
        assert profile_ops(TINY, runner, out, statistic="min", **FAST).header.statistic == "min"
    assert out.read_text() == before and Lut.load(out).header.statistic == "min"


def test_validation_metrics_match_their_textbook_definitions():
    from scipy.stats import spearmanr

    predicted = np.array([1.0, 2.0, 2.0, 3.5, 0.5, 2.0])  # ties, as archs with equal table sums give
    measured = np.array([1.1, 1.9, 2.4, 3.0, 0.7, 2.4])
    m = metrics(predicted, measured)
    assert m["spearman"] == round(float(spearmanr(predicted, measured)[0]), 4)
    assert m["mape"] == round(float(np.mean(np.abs(predicted - measured) / measured)), 4)
    assert m["rmse_ms"] == round(float(np.sqrt(np.mean((predicted - measured) ** 2))), 4)


TABLES = Path(__file__).parents[1] / "search" / "latency" / "tables"
# The validation figures the README and the tables' README quote: (MAPE, Spearman) of 20 random archs, seed 0.
DOCUMENTED = {
    "fmnist_cpu_onnxruntime_b1": (0.0092, 0.9895),
    "fmnist_cpu_openvino_b1": (0.0666, 0.9188),
    "fmnist_cpu_torch_b1": (0.0183, 0.991),
    "fmnist_cuda_torch_b8": (0.0635, 0.6226),
    "imagenet_cpu_onnxruntime_b1": (0.0332, 0.9805),
    "imagenet_cpu_openvino_b1": (0.0188, 0.9699),
    "imagenet_cpu_torch_b1": (0.1054, 0.8586),
    "imagenet_cuda_torch_b8": (0.0897, 0.8586),
}


@pytest.mark.parametrize("table", sorted(DOCUMENTED))
def test_shipped_table_predicts_what_its_validation_recorded(table: str) -> None:
    """A shipped table and its validation agree: the same out-of-sample archs, the same predictions from the
    table as it is now, and the documented MAPE / Spearman recomputed from the recorded per-arch timings."""
    lut = Lut.load(TABLES / f"{table}.json")
    details = json.loads((TABLES / f"{table}.validate.json").read_text())
    space = SPACES[lut.header.space]
    calibration = lut.header.calibration or {}
    archs = sample_archs(space, details["n"], details["seed"], exclude=set(calibration.get("archs", [])))
    assert [signature(space, a) for a in archs] == details["archs"], "validation archs are no longer reproducible"
    assert not set(details["archs"]) & set(calibration["archs"]) and details["n"] == 20
    model = TableModel(lut, table)
    assert details["overhead_ms"] == model.overhead == calibration["overhead_ms"]
    predicted = np.array([model.predict_arch(a).total_ms for a in archs])
    np.testing.assert_allclose(predicted, details["predicted_ms"], atol=1e-4)
    figures = metrics(predicted, np.array(details["measured_ms"]))
    assert (figures["mape"], figures["spearman"]) == (details["mape"], details["spearman"]) == DOCUMENTED[table]
    if lut.header.runtime == "onnxruntime":  # the tables recommended for CPU targets
        assert figures["mape"] < 0.05 and figures["spearman"] > 0.95
