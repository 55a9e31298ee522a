"""The ``proxyless export`` commands end to end on a tiny arch file (export + parity report, bad input refused in
one line, a small latency report) and on a trained net (a deliberately perturbed artefact caught by ``check``)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from export.cli import main
from zoo import create_model
from zoo.arch import ArchSpec, BlockSpec
from zoo.datasets import build_eval_dataset
from zoo.runtimes.tensorrt import tensorrt_unavailable
from zoo.weights import sha256_file

TINY = ArchSpec(
    name="tiny",
    blocks=tuple(BlockSpec.parse(b) for b in ("mb1_k3_s1_c8", "mb3_k3_s2_c16", "mb3_k5_s1_c16_res", "zero")),
    stem_channels=8,
    stem_stride=1,
    feature_mix=32,
    in_chans=1,
    input_size=28,
    num_classes=10,
)
FAST = ["--onnx-exporter", "torchscript", "--pt2-mode", "program", "--parity-images", "64", "--no-progress"]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One CLI export of every format (int8 included), shared by the tests below: (out dir, rc, stdout)."""
    root = tmp_path_factory.mktemp("cli")
    arch = root / "tiny.json"
    arch.write_text(TINY.to_json())
    out = root / "out"
    argv = [str(arch), "--formats", "torchscript,onnx,pt2,tensorrt,int8", "--out", str(out), *FAST]
    argv += ["--latency-calls", "6"]
    argv += ["--calib-images", "64", "--eval-images", "200"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(argv)
    return out, rc, stdout.getvalue()


def test_export_writes_checked_artefacts(exported):
    out, rc, stdout = exported
    assert rc == 0
    summary = last_json(stdout)
    for fmt, suffix in (("torchscript", ".pt"), ("onnx", ".onnx"), ("pt2", ".pt2"), ("int8", ".int8.onnx")):
        assert (out / f"tiny{suffix}").is_file()
        assert summary[fmt]["ok"]
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["weights"].startswith("random")
    by_format = {a["format"]: a for a in report["artefacts"]}
    onnx_check = by_format["onnx"]["checks"][0]
    assert onnx_check["runtime"] == "onnxruntime" and onnx_check["parity"]["max_abs"] <= 1e-4
    assert all(a["sha256"] == sha256_file(out / a["file"]) for a in report["artefacts"])
    assert onnx_check["parity"]["top1_agreement"] == 1.0
    assert by_format["int8"]["checks"][0]["parity"]["atol"] is None
    assert set(by_format["int8"]["build"]["accuracy"]) >= {"fp32", "int8", "change"}
    reason = tensorrt_unavailable()
    if reason:  # one line, and the rest exported anyway
        assert stdout.count("tensorrt: skipped") == 1
        assert report["skipped"]["tensorrt"] == reason
    assert main(["check", str(out), "--no-progress"]) == 0


def test_one_report_carries_parity_and_latency_of_every_runtime(exported):
    """issue 29: the export report has both, per runtime, and the eager baseline they are compared with."""
    out, _, stdout = exported
    report, summary = json.loads((out / "report.json").read_text()), last_json(stdout)
    checks = [c for a in report["artefacts"] for c in a["checks"]]
    assert {c["runtime"] for c in checks} >= {"torchscript", "onnxruntime", "pt2", "onnxruntime-int8"}
    eager = report["eager_p50_ms"]
    assert eager > 0 and summary["eager_p50_ms"] == eager
    for c in checks:
        assert c["p50_ms"] > 0 and c["vs_eager"] == round(eager / c["p50_ms"], 2)
        assert (
            summary[next(a["format"] for a in report["artefacts"] if c in a["checks"])][c["runtime"]]["p50_ms"]
            == c["p50_ms"]
        )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A bundled, trained net exported to ONNX: its logits have std > 1, so a perturbed weight shows clearly
    (on a random net, 1.5x its largest weight moved the logits by 1.02e-4 against the 1e-4 tolerance)."""
    out = tmp_path_factory.mktemp("trained") / "out"
    argv = ["fmnist_mobilenetv2", "--formats", "onnx", "--out", str(out), *FAST]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    return out


def test_perturbed_onnx_fails_check(trained, capsys):
    out = trained
    path = out / "fmnist_mobilenetv2.onnx"
    model = onnx.load(str(path))
    info = create_model("fmnist_mobilenetv2").info
    data = build_eval_dataset("fashion-mnist", "test", None, 28, info.mean, info.std, limit=64)
    x = np.stack([data[i][0].numpy() for i in range(len(data))])
    logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert logits.std() > 1, "the check needs a net whose logits are not all near zero"
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the biggest weight tensor
    w = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((w * 1.5).astype(w.dtype), init.name))
    onnx.save(model, str(path))
    capsys.readouterr()
    assert main(["check", str(out), "--no-progress"]) == 2  # not the file the report describes
    assert "fmnist_mobilenetv2.onnx: sha256 differs from the report's" in capsys.readouterr().err
    # the report vouches for the changed file (as if exported so): the parity check itself must catch it
    report_path = out / "report.json"
    original = report_path.read_text()
    report = json.loads(original)
    next(a for a in report["artefacts"] if a["format"] == "onnx")["sha256"] = sha256_file(path)
    report_path.write_text(json.dumps(report))
    assert main(["check", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: parity: fmnist_mobilenetv2.onnx differs from eager PyTorch")
    diff = float(re.search(r"max abs logit diff ([0-9.e+-]+) \(tolerance ([0-9.e+-]+)\)", err[0]).group(1))
    assert diff > 100 * 1e-4, f"a 1.5x weight moved the logits by only {diff:.3g}: the check is marginal"
    report_path.write_text(original[: len(original) // 2])
    assert main(["check", str(out), "--no-progress"]) == 2
    assert "report.json: not JSON (" in capsys.readouterr().err


def test_a_format_whose_runtime_is_missing_is_skipped_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("zoo.runtimes.registry.shutil.which", lambda name: None)  # no C++ compiler for AOTInductor
    arch = tmp_path / "tiny.json"
    arch.write_text(TINY.to_json())
    argv = [str(arch), "--formats", "torchscript,pt2", "--out", str(tmp_path / "o"), *FAST, "--pt2-mode", "aoti"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [a["format"] for a in report["artefacts"]] == ["torchscript"]
    assert report["skipped"] == {"pt2": "AOTInductor needs a C++ compiler (c++/g++/clang++) on PATH"}
    assert report["eager_p50_ms"] > 0
    assert capsys.readouterr().out.count("pt2: skipped: AOTInductor needs a C++ compiler") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nonexistent_model_xyz", "--out", "OUT"], "unknown model"),
        (["missing.json", "--out", "OUT"], "arch file not found"),
        (["ARCH", "--formats", "onnx,tflite", "--out", "OUT"], "unknown format(s) tflite"),
        (["check", "OUT"], "report.json: missing"),
        (["bench", "ARCH", "--runtimes", "torch,mxnet", "--out", "OUT"], "unknown runtime(s) mxnet"),
    ],
)
def test_bad_input_is_one_line(argv, message, tmp_path, capsys):
    arch = tmp_path / "tiny.json"
    arch.write_text(TINY.to_json())
    argv = [a.replace("ARCH", str(arch)).replace("OUT", str(tmp_path / "o")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_bench_writes_report_chart_and_json_line(tmp_path, capsys):
    arch = tmp_path / "tiny.json"
    arch.write_text(TINY.to_json())
    out = tmp_path / "bench"
    argv = ["bench", str(arch), "--out", str(out), "--no-progress", "--runtimes", "torch,onnxruntime,tensorrt"]
    argv += ["--batches", "1,3", "--iters", "5", "--rounds", "2", "--warmup", "1", "--onnx-exporter", "torchscript"]
    assert main(argv) == 0
    line = last_json(capsys.readouterr().out)
    assert [(s["batch"], s["best_runtime"]) for s in line["summary"]] == [(1, "onnxruntime"), (3, "onnxruntime")]
    report = json.loads((out / "report.json").read_text())
    rows = report["results"]
    assert {(r["runtime"], r["batch"]) for r in rows} == {(k, b) for k in ("torch", "onnxruntime") for b in (1, 3)}
    p50 = {(r["runtime"], r["batch"]): r["p50_ms"] for r in rows}
    for s in line["summary"]:  # the summary line is the report's rows, not numbers of its own
        eager, best = p50[("torch", s["batch"])], p50[("onnxruntime", s["batch"])]
        assert (s["eager_ms"], s["best_ms"]) == (round(eager, 3), round(best, 3))
        assert s["speedup"] == round(eager / best, 2)
    for r in rows:
        assert r["p50_ms"] > 0 and r["p50_ms"] <= r["p99_ms"] and r["throughput_ips"] > 0
        assert r["calls"] == 5  # --iters, even when --rounds does not divide it
        assert r["file_bytes"] > 0
    assert report["env"]["torch"] and report["env"]["cpu"]
    assert report["settings"]["threads"] == 1
    if tensorrt_unavailable():
        assert "tensorrt" in report["unavailable"]
    assert "| onnxruntime |" in (out / "report.md").read_text()
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(out / "artefacts").is_dir()


CHEAP = [*FAST, "--latency-calls", "0", "--parity-images", "16", "--no-slim"]


def _tiny_arch(tmp_path: Path) -> str:
    arch = tmp_path / "tiny.json"
    arch.write_text(TINY.to_json())
    return str(arch)


def test_an_earlier_exports_folder_is_refused_unless_forced_which_replaces_it(tmp_path, capsys):
    arch, out = _tiny_arch(tmp_path), tmp_path / "exported"
    assert main([arch, "--formats", "onnx", "--out", str(out), *CHEAP]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    for argv in ([arch, "--formats", "torchscript"], ["bench", arch, "--runtimes", "torch"]):
        assert main([*argv, "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"error: --out {out}: exists and is not an empty folder (holds report.json, tiny.onnx); "
            "choose another or pass --force"
        ]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([arch, "--formats", "torchscript", "--out", str(out), *CHEAP, "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "tiny.pt"]  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "tiny.json"]


def test_a_second_export_into_the_same_folder_fails_in_one_line_and_the_first_report_stays(
    tmp_path, capsys, monkeypatch
):
    import threading

    import export.pipeline

    arch, out = _tiny_arch(tmp_path), tmp_path / "exported"
    started, go = threading.Event(), threading.Event()
    real_write = export.pipeline.write_json

    def slow_write(path: Path, obj: dict) -> Path:
        if not started.is_set():  # only the first writer waits: a second one that got through fails fast
            started.set()
            go.wait(120)
        return real_write(path, obj)

    monkeypatch.setattr(export.pipeline, "write_json", slow_write)
    codes: list[int] = []
    first = threading.Thread(target=lambda: codes.append(main([arch, "--formats", "onnx", "--out", str(out), *CHEAP])))
    first.start()
    try:
        assert started.wait(300), "the first export did not reach its report"
        assert main([arch, "--formats", "torchscript", "--out", str(out), *CHEAP, "--force"]) == 2
    finally:
        go.set()
        first.join(300)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: --out {out}: another run is writing this folder now; wait for it to finish or choose another"
    ]
    assert codes == [0]
    report = json.loads((out / "report.json").read_text())
    assert [a["format"] for a in report["artefacts"]] == ["onnx"] and sorted(p.name for p in out.iterdir()) == [
        "report.json",
        "tiny.onnx",
    ]
