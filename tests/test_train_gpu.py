"""CUDA path of the training pipeline (skipped without a GPU): on-device batches match the CPU ones, and a
bf16 + channels-last run trains and saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train_resume import TINY  # the same tiny fmnist-shaped net

from search.training.data import Augment, TensorLoader
from search.training.train import TrainConfig, train
from zoo.datasets import make_synthetic

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)"),
]


def test_cuda_loader_matches_cpu_loader() -> None:
    images, labels = make_synthetic("train", n=256)
    kw = {"train": True, "augment": Augment(pad=2, flip=True, erase=0.5), "seed": 3}
    cpu = TensorLoader(images, labels, 64, (0.5,), (0.25,), **kw)
    gpu = TensorLoader(images, labels, 64, (0.5,), (0.25,), device="cuda", channels_last=True, **kw)
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.cpu(), atol=1e-6)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_training_learns(tmp_path: Path, amp: str) -> None:
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY))
    config = TrainConfig(arch=str(arch), out=str(tmp_path / "run"), dataset="synthetic", device="cuda", amp=amp)
    config.epochs, config.batch_size, config.lr, config.warmup_epochs = 4, 32, 1.6, 0.5
    config.channels_last, config.progress = True, False
    result = train(config)
    assert result["finished"] and result["device"].startswith("cuda") and result["top1"] > 0.5
    assert (tmp_path / "run" / "model.safetensors").is_file()
