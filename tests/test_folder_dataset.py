"""An ImageNet-style folder dataset (generated images) end to end through the registries (issue 28): registered
once, it gives export its parity images and int8 calibration, int8 its accuracy, and the demo its preprocessing
and class names; a net on a dataset with no data here takes ``--parity-data`` / ``--calibration-data`` folders.
And nothing in export/ or demo/ names Fashion-MNIST or its constants."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from export.cli import main as export_main
from zoo import datasets
from zoo.arch import ArchSpec, BlockSpec
from zoo.datasets import DatasetSpec, eval_transform, register_dataset
from zoo.network import ProxylessNet
from zoo.weights import save_pretrained

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("blue", "green", "red")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
SPEC = ArchSpec(
    name="shapes_net",
    blocks=tuple(BlockSpec.parse(b) for b in ("mb1_k3_s1_c8", "mb3_k3_s2_c16")),
    stem_channels=8,
    stem_stride=1,
    feature_mix=32,
    in_chans=3,
    input_size=24,
    num_classes=3,
)


def _image(rng: np.random.Generator, label: int) -> Image.Image:
    """A 40x30 photo-like image: noise, with one colour channel brighter (the class)."""
    a = rng.integers(0, 120, (30, 40, 3))
    a[..., label] += 120
    return Image.fromarray(a.astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root, rng = tmp_path_factory.mktemp("shapes"), np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 6)):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                _image(rng, label).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def shapes(folder):
    """The folder registered as dataset ``shapes`` for this module, and a net trained on it (a fitted linear head
    on colour means, so int8 accuracy means something), saved in a folder named ``train``."""
    spec = DatasetSpec(
        "shapes", 3, 24, None, MEAN, STD, folder=lambda s, d: folder / ("train" if s == "train" else "val")
    )
    register_dataset(spec)
    torch.manual_seed(0)
    model = ProxylessNet(SPEC).eval()
    meta = {
        "dataset": "shapes",
        "input_size": [3, 24, 24],
        "mean": MEAN,
        "std": STD,
        "categories": CLASSES,
        "source": "test",
        "metrics": {},
    }
    weights = folder / "weights" / "train"
    save_pretrained(model, weights, meta)
    yield weights
    datasets._DATASETS.pop("shapes")


def _export(argv: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert export_main([*argv, "--no-progress", "--onnx-exporter", "torchscript", "--latency-calls", "3"]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_export_takes_parity_and_calibration_images_from_the_dataset_registry(shapes, folder, tmp_path):
    summary = _export([str(shapes), "--formats", "onnx,int8", "--out", str(tmp_path), "--parity-images", "12"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert summary["model"] == report["model"]["name"] == "shapes_net"  # the net, not its folder "train"
    assert (tmp_path / "shapes_net.onnx").is_file() and (tmp_path / "shapes_net.int8.onnx").is_file()
    assert report["parity_images"] == f"12 images from {folder / 'val'}"
    int8 = next(a for a in report["artefacts"] if a["format"] == "int8")
    assert int8["build"]["calibration_images"] == f"24 images from {folder / 'train'}"
    assert int8["build"]["accuracy"]["images"] == f"18 images from {folder / 'val'}"  # labelled: its classes
    assert summary["onnx"]["onnxruntime"]["max_abs"] <= 1e-4


def test_a_net_without_its_data_here_takes_parity_and_calibration_folders(shapes, folder, tmp_path):
    config = json.loads((shapes / "config.json").read_text())
    config["metadata"]["dataset"] = "imagenet"  # registered, but no ImageNet on this machine
    other = tmp_path / "imagenet_net"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(config))
    (other / "model.safetensors").write_bytes((shapes / "model.safetensors").read_bytes())
    argv = [str(other), "--formats", "int8", "--out", str(tmp_path / "out"), "--parity-data", str(folder / "val")]
    _export([*argv, "--calibration-data", str(folder / "train" / "red"), "--calib-images", "5"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["parity_images"] == f"18 images from {folder / 'val'}"
    int8 = next(a for a in report["artefacts"] if a["format"] == "int8")
    assert int8["build"]["calibration_images"] == f"5 images from {folder / 'train' / 'red'}"


def test_the_demo_prepares_and_names_classes_from_the_registries(shapes, folder, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from demo.app import Predictor
    from demo.preprocess import InputSpec, load_image, prepare
    from zoo.registry import get_model_info

    served = tmp_path / "shapes_net"
    served.mkdir()
    for name in ("config.json", "model.safetensors"):
        (served / name).write_bytes((shapes / name).read_bytes())
    monkeypatch.setenv("PROXYLESS_ZOO_EXTRA", str(served))
    info = get_model_info("shapes_net")
    path = folder / "val" / "red" / "0.png"
    prepared = prepare(load_image(path)[0], InputSpec.from_info(info))
    expected = eval_transform(24, MEAN, STD)(Image.open(path)).numpy()[None]
    np.testing.assert_allclose(prepared.array, expected, atol=1e-6)  # the registry's eval transform, exactly
    predictor = Predictor(["shapes_net"], ["onnxruntime", "torch"], tmp_path / "cache", "torchscript")
    results = [predictor.classify(path.read_bytes(), "shapes_net", kind) for kind in ("onnxruntime", "torch")]
    assert set(results[0].top) == set(CLASSES) and results[0].top.keys() == results[1].top.keys()
    for a, b in zip(results[0].top.values(), results[1].top.values(), strict=True):
        assert abs(a - b) < 1e-5


def test_export_and_demo_do_not_name_fashion_mnist():
    """Generic code reads the dataset from a net's metadata; a default model name (fmnist_...) is fine."""
    pattern = re.compile(r"FMNIST_[A-Z]|FMNIST\b|fashion_mnist|[\"']fashion-mnist[\"']|FashionMNIST")
    offenders = [
        f"{path.relative_to(ROOT)}:{i}"
        for package in ("export", "demo")
        for path in sorted((ROOT / package).rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
