"""Every export format round-trips on a small Fashion-MNIST-shaped net, checked on real test images.

The net's BatchNorm statistics are set from real images (train-mode passes), so its logits have the spread of
a working classifier rather than the near-zero logits of a fresh random init; that makes a 1e-4 tolerance mean
something.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.files import ExportError
from export.parity import accuracy, compare, eager_logits
from export.source import source_from_model
from zoo.arch import ArchSpec, BlockSpec
from zoo.network import ProxylessNet
from zoo.runtimes import BuildOptions, available_runtimes, load_session, make_session
from zoo.runtimes.onnx import check_onnx, export_onnx, slim_onnx
from zoo.runtimes.pt2 import export_pt2, pt2_mode
from zoo.runtimes.quantize import quantize_int8
from zoo.runtimes.tensorrt import tensorrt_unavailable
from zoo.runtimes.torchscript import export_torchscript
from zoo.samples import sample_images

SHAPE = (1, 28, 28)
SPEC = ArchSpec(
    name="fm_small",
    blocks=tuple(
        BlockSpec.parse(b)
        for b in ("mb1_k3_s1_c16", "mb3_k3_s2_c24", "mb3_k5_s1_c24_res", "zero", "mb6_k3_s2_c40", "mb3_k7_s1_c40_res")
    ),
    stem_channels=16,
    stem_stride=1,
    feature_mix=128,
    in_chans=1,
    input_size=28,
    num_classes=10,
)
TRT_REASON = tensorrt_unavailable()


def fitted_net(spec: ArchSpec, x: np.ndarray, labels: np.ndarray) -> torch.nn.Module:
    """Random convolutions, BatchNorm statistics of real images (cumulative average over train-mode passes) and a
    ridge-regression classifier on their features: a weak but real classifier in a second, not a training run."""
    torch.manual_seed(0)
    net = ProxylessNet(spec)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    net.train()
    with torch.no_grad():
        for i in range(0, len(x), 64):
            net(torch.from_numpy(x[i : i + 64]))
        net.eval()
        feats = torch.cat([net.forward_features(torch.from_numpy(x[i : i + 64])) for i in range(0, len(x), 64)])
        feats = torch.cat([feats, torch.ones(len(feats), 1)], 1).double()
        targets = 10.0 * torch.nn.functional.one_hot(torch.from_numpy(labels), 10).double()
        w = torch.linalg.solve(feats.T @ feats + 1e-2 * torch.eye(feats.shape[1]), feats.T @ targets).float()
        net.classifier.linear.weight.copy_(w[:-1].T)
        net.classifier.linear.bias.copy_(w[-1])
    return net


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    probe = source_from_model(ProxylessNet(SPEC), SHAPE)
    train = sample_images(probe.preprocessing, "calibration", 1024)
    model = fitted_net(SPEC, train.x, train.labels)
    source = source_from_model(model, SHAPE)
    images = sample_images(source.preprocessing, "parity", 128)
    return {
        "model": model,
        "calib": train.x[:256],
        "images": images,
        "reference": eager_logits(model, images.x),
        "dir": tmp_path_factory.mktemp("formats"),
    }


@pytest.fixture(scope="module")
def onnx_file(case) -> Path:
    """The default (dynamo) exporter; the older one is exercised by the CLI tests."""
    return export_onnx(case["model"], SHAPE, case["dir"] / "m.onnx", batch_max=16, exporter="dynamo")


def assert_parity(path: Path, kind: str, case) -> None:
    p = compare(path.name, load_session(kind, path), case["images"].x, case["reference"], batch=16)
    assert p.ok, p.failure()
    assert p.max_abs <= 1e-4 and p.top1_agreement == 1.0


def test_reference_is_a_working_classifier(case):
    ref, labels = case["reference"], case["images"].labels
    assert ref.std() > 1.0  # a real spread, so 1e-4 is a meaningful tolerance
    assert (ref.argmax(1) == labels).mean() > 0.5


def test_torchscript_round_trip(case):
    path = export_torchscript(case["model"], SHAPE, case["dir"] / "m.pt")
    assert_parity(path, "torchscript", case)


def test_onnx_round_trip_with_dynamic_batch(case, onnx_file):
    model = check_onnx(onnx_file)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert_parity(onnx_file, "onnxruntime", case)  # batches of 16 and a batch of 1


def test_onnxslim_copy_computes_the_same(case, onnx_file):
    before, after = slim_onnx(onnx_file, case["dir"] / "slim.onnx")
    assert after <= before
    assert_parity(case["dir"] / "slim.onnx", "onnxruntime", case)


def test_onnx_refuses_old_opset_and_single_batch(case):
    with pytest.raises(ExportError, match="opset 13"):
        export_onnx(case["model"], SHAPE, case["dir"] / "old.onnx", opset=13)
    with pytest.raises(ExportError, match="batch_max"):
        export_onnx(case["model"], SHAPE, case["dir"] / "one.onnx", batch_max=1)
    assert not (case["dir"] / "old.onnx").exists()


def test_pt2_program_round_trip(case):
    path = export_pt2(case["model"], SHAPE, case["dir"] / "m.pt2", batch_max=16, mode="program")
    assert pt2_mode(path) == "program"
    assert_parity(path, "pt2", case)


def test_int8_quantization_keeps_accuracy(case, onnx_file):
    path = case["dir"] / "m.int8.onnx"
    info = quantize_int8(onnx_file, path, case["calib"])
    assert info["per_channel"] and info["quant_format"] == "QDQ"
    q = onnx.load(str(path))
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    assert path.stat().st_size < onnx_file.stat().st_size
    images = case["images"]
    p = compare(path.name, load_session("onnxruntime-int8", path), images.x, case["reference"], atol=None)
    assert p.ok and p.atol is None  # quantized: reported, not held to the fp32 tolerance
    # Random convolutions quantize poorly (about 65% top-1 agreement here; a trained net: see the next test),
    # but a broken quantization would agree by chance (10%).
    assert p.max_abs > 0 and p.top1_agreement >= 0.5
    int8 = accuracy(load_session("onnxruntime-int8", path), images.x, images.labels)
    fp32 = accuracy(lambda x: eager_logits(case["model"], x), images.x, images.labels)
    assert abs(int8 - fp32) <= 0.15


def bundled_fmnist_net() -> str | None:
    from zoo.registry import list_models

    names = list_models(pretrained_only=True, dataset="fashion-mnist")
    return names[0] if names else None


@pytest.mark.skipif(bundled_fmnist_net() is None, reason="no trained Fashion-MNIST net bundled in zoo/pretrained yet")
def test_int8_of_a_trained_net_keeps_its_accuracy(tmp_path):
    from export.source import load_source

    source = load_source(bundled_fmnist_net())
    test = sample_images(source.preprocessing, "evaluation", 500)
    onnx_path = export_onnx(source.model, source.input_shape, tmp_path / "m.onnx", exporter="torchscript")
    path = tmp_path / "m.int8.onnx"
    quantize_int8(onnx_path, path, sample_images(source.preprocessing, "calibration", 256).x)
    reference = eager_logits(source.model, test.x)
    p = compare(path.name, load_session("onnxruntime-int8", path), test.x, reference, atol=None)
    assert p.top1_agreement >= 0.95
    fp32 = accuracy(lambda x: eager_logits(source.model, x), test.x, test.labels)
    assert abs(accuracy(load_session("onnxruntime-int8", path), test.x, test.labels) - fp32) <= 0.02


def test_make_runtime_caches_exports(case, tmp_path):
    fast = BuildOptions(onnx_exporter="torchscript")
    run = make_session("onnxruntime", case["model"], (1, *SHAPE), tmp_path, options=fast)
    files = list(tmp_path.glob("*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = make_session("onnxruntime", case["model"], SHAPE, tmp_path, options=fast)
    assert files[0].stat().st_mtime_ns == stamp and len(list(tmp_path.glob("*.onnx"))) == 1
    x = case["images"].x[:4]
    np.testing.assert_allclose(run(x), again(x), atol=0)
    np.testing.assert_allclose(run(x), case["reference"][:4], atol=1e-4)
    eager = make_session("torch", case["model"], SHAPE, tmp_path)
    assert eager.name == "torch" and eager(x).shape == (4, 10)


def test_available_runtimes_contract():
    status = available_runtimes()
    assert {"torch", "torchscript", "onnxruntime", "tensorrt"} <= set(status)
    assert status["torch"] is None and status["onnxruntime"] is None
    assert all(v is None or (isinstance(v, str) and "\n" not in v) for v in status.values())


@pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT cannot run here: {TRT_REASON}")
def test_tensorrt_engine_round_trip(case, onnx_file):
    from zoo.runtimes.tensorrt import build_engine

    path = case["dir"] / "m.engine"
    info = build_engine(onnx_file, path, SHAPE, batch_max=16, fp16=False)
    assert info["precision"] == "fp32"
    assert_parity(path, "tensorrt", case)


@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT is available here")
def test_tensorrt_unavailable_is_one_clear_line(case, tmp_path):
    assert TRT_REASON and "\n" not in TRT_REASON
    with pytest.raises(ExportError, match="tensorrt is not available here"):
        make_session("tensorrt", case["model"], SHAPE, tmp_path)


def test_the_artefact_cache_tells_apart_nets_with_the_same_state_dict(tmp_path: Path) -> None:
    """Stride and shortcut change the function, not the state_dict: each net must get its own cached artefact."""
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28), dtype=np.float32)
    outputs = []
    for blocks in (("mb3_k3_s1_c16", "mb3_k3_s1_c16_res"), ("mb3_k3_s2_c16", "mb3_k3_s1_c16")):
        spec = ArchSpec("same_weights", tuple(map(BlockSpec.parse, blocks)), 16, 3, 1, 32, 1, 28, 10)
        torch.manual_seed(0)
        model = ProxylessNet(spec).eval()
        run = make_session("torchscript", model, (1, 28, 28), tmp_path, "cpu", 1)
        torch.testing.assert_close(torch.from_numpy(run(x)), model(torch.from_numpy(x)), rtol=1e-4, atol=1e-4)
        outputs.append(run(x))
    assert len(list(tmp_path.glob("model-*.pt"))) == 2 and not np.allclose(*outputs)


OPENVINO_REASON = available_runtimes()["openvino"]
BF16_REASON = available_runtimes()["openvino-bf16"]


@pytest.mark.skipif(OPENVINO_REASON is not None, reason=f"OpenVINO cannot run here: {OPENVINO_REASON}")
def test_openvino_ir_round_trip_fp32_and_bf16(case, onnx_file):
    """One IR file, two runtimes: fp32 within the fp32 tolerance, bf16 (where the CPU has it) within the reduced
    precision one, on a fitted net whose logits spread over several units."""
    from export.pipeline import ExportOptions, tolerance
    from zoo.runtimes.openvino import save_ir

    path = case["dir"] / "m.xml"
    info = save_ir(onnx_file, path)
    assert path.with_suffix(".bin").is_file() and info["weights"] == "fp32"
    assert_parity(path, "openvino", case)
    if BF16_REASON is not None:
        assert "bf16" in BF16_REASON
        return
    session = load_session("openvino-bf16", path)
    assert "bf16" in session.provider
    atol, agreement = tolerance("bf16", ExportOptions())
    p = compare(path.name, session, case["images"].x, case["reference"], atol=None, batch=16)
    fp32 = compare(path.name, load_session("openvino", path), case["images"].x, case["reference"], batch=16)
    assert 10 * fp32.max_abs < p.max_abs <= atol  # really ran in bf16 (not silently fp32), within its tolerance
    assert p.top1_agreement >= agreement
    print(f"openvino bf16: max abs logit diff {p.max_abs:.3g} (tolerance {atol}), top-1 agreement {p.top1_agreement}")


def test_make_session_calibrates_int8_on_the_nets_own_dataset(case, tmp_path):
    """Without calibration images given, int8 is calibrated on the dataset the net's metadata (or, lacking it, its
    input shape) names: a working quantized classifier, not one calibrated on noise."""
    fast = BuildOptions(onnx_exporter="torchscript")
    run = make_session("onnxruntime-int8", case["model"], SHAPE, tmp_path, options=fast)
    images = case["images"]
    p = compare("int8", run, images.x, case["reference"], atol=None, batch=16)
    assert p.top1_agreement >= 0.5 and len(list(tmp_path.glob("*.int8.onnx"))) == 1
