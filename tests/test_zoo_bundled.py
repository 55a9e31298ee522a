"""Every bundled Fashion-MNIST net still reaches its recorded accuracy (on the fixed CI subset of the test set)."""

import pytest

from zoo import create_model, list_models
from zoo.datasets import build_eval_dataset
from zoo.evaluate import evaluate

BUNDLED = [name for name in list_models(pretrained_only=True) if name.startswith("fmnist_")]


@pytest.mark.skipif(not BUNDLED, reason="no Fashion-MNIST net is bundled in zoo/pretrained yet")
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_net_keeps_its_recorded_accuracy(name: str) -> None:
    model = create_model(name, pretrained=True).eval()
    info = model.info
    recorded, n = info.metrics["top1_ci_subset"], info.metrics["ci_subset"]
    c, h, _ = info.input_size
    data = build_eval_dataset("fashion-mnist", "test", None, h, info.mean, info.std, limit=n, subset_seed=0)
    result = evaluate(model, data, batch_size=500)
    assert result["n"] == n and c == 1
    assert result["top1"] >= recorded - 0.005, f"{name}: {result['top1']:.4f} vs recorded {recorded:.4f}"
    assert info.metrics["top1"] > 0.5 and info.metrics["n_test"] == 10_000
