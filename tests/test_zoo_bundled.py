"""Every bundled Fashion-MNIST net reproduces its recorded accuracy (the fixed CI subset and the full 10k test
set), and ``zoo eval``'s pipeline agrees with a hand-written one read straight from the IDX files."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import create_model, list_models
from zoo.datasets import balanced_subset, build_eval_dataset, fmnist_dir
from zoo.evaluate import evaluate

ROOT = Path(__file__).parents[1]
BUNDLED = list_models(pretrained_only=True, dataset="fashion-mnist")


def _idx(name: str, header: int) -> np.ndarray:
    """An IDX file of the Debian package, parsed by hand (magic, then big-endian sizes, then uint8 data)."""
    return np.frombuffer(gzip.decompress((fmnist_dir() / f"{name}.gz").read_bytes())[header:], dtype=np.uint8)


@pytest.mark.skipif(not BUNDLED, reason="no Fashion-MNIST net is bundled in zoo/pretrained yet")
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_net_keeps_its_recorded_accuracy(name: str) -> None:
    model = create_model(name, pretrained=True).eval()
    info = model.info
    recorded, n = info.metrics["top1_ci_subset"], info.metrics["ci_subset"]
    c, h, _ = info.input_size
    data = build_eval_dataset("fashion-mnist", "test", None, h, info.mean, info.std, limit=n, subset_seed=0)
    result = evaluate(model, data, batch_size=500)
    assert result.n == n and c == 1 and h == 28
    assert abs(result.top1 - recorded) <= 1 / n, f"{name}: {result.top1:.4f} vs recorded {recorded:.4f}"

    # the same subset through nothing of zoo.datasets but the index choice: raw bytes, /255, mean/std, argmax
    labels = torch.from_numpy(_idx("t10k-labels-idx1-ubyte", 8).astype(np.int64))
    images = _idx("t10k-images-idx3-ubyte", 16).reshape(10_000, 1, 28, 28)
    keep = balanced_subset(labels, n, seed=0).numpy()
    assert np.bincount(labels.numpy()[keep], minlength=10).tolist() == [n // 10] * 10
    x = (torch.from_numpy(images[keep].astype(np.float32)) / 255 - info.mean[0]) / info.std[0]
    with torch.no_grad():
        hits = (model(x).argmax(1) == labels[keep]).sum().item()
    assert abs(hits / n - result.top1) <= 1 / n, f"{name}: by hand {hits / n:.4f}, zoo eval {result.top1:.4f}"


@pytest.mark.slow
@pytest.mark.skipif(not BUNDLED, reason="no Fashion-MNIST net is bundled in zoo/pretrained yet")
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_net_reproduces_its_recorded_full_test_accuracy(name: str) -> None:
    """The top-1 in the metadata (the README's results table, the model card) is what the weights give on all
    10,000 test images, to one image (about a minute per net on one core)."""
    model = create_model(name, pretrained=True).eval()
    info = model.info
    data = build_eval_dataset("fashion-mnist", "test", None, info.input_size[1], info.mean, info.std)
    result = evaluate(model, data)
    assert result.n == info.metrics["n_test"] == 10_000
    recorded = info.metrics["top1"]
    assert abs(result.top1 - recorded) <= 1e-4, f"{name}: {result.top1:.4f} vs recorded {recorded:.4f}"


@pytest.mark.skipif(not BUNDLED, reason="no Fashion-MNIST net is bundled in zoo/pretrained yet")
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_net_loads_offline_through_torch_hub(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = torch.hub.load(str(ROOT), name, source="local", pretrained=True).eval()
    model = create_model(name, pretrained=True).eval()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(hub(x), model(x))
    assert hub.info.weights.sha256 == model.info.weights.sha256 and hub.info.metrics["n_test"] == 10_000
