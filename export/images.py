"""Real images for parity checks and int8 calibration, preprocessed as the model expects.

Fashion-MNIST nets get Fashion-MNIST images (test split for checks, train split for calibration). No other
dataset is on this machine, so other nets get Fashion-MNIST images resized to their input and replicated to
their channels: real photographs, not their training distribution (the description says so). ``--calib-dir``
points int8 calibration at a folder of the model's own images instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from export.files import ExportError
from export.source import FMNIST, Source

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class ImageSet:
    """Normalized float32 NCHW images; labels only where they are the model's own classes."""

    x: np.ndarray
    labels: np.ndarray | None
    description: str


def fmnist_images(source: Source, n: int | None, split: str) -> ImageSet:
    """``n`` class-balanced Fashion-MNIST images of ``split`` (all of them when ``n`` is None)."""
    from zoo.datasets import balanced_subset, load_fashion_mnist, preprocess

    images, labels = load_fashion_mnist(split)
    if n is not None and n < len(labels):
        idx = balanced_subset(labels, n)
        images, labels = images[idx], labels[idx]
    c, h, w = source.input_shape
    if h != w:
        raise ExportError(f"{source.name}: non-square input {h}x{w} is not supported")
    mean, std = torch.tensor(source.mean), torch.tensor(source.std)
    x = preprocess(images.unsqueeze(1), h, mean, std, c).numpy().astype(np.float32)
    what = f"Fashion-MNIST {split} split, {len(labels)} images"
    if source.dataset == FMNIST:
        return ImageSet(x, labels.numpy(), what)
    what += f" resized to {h}x{w}, {c} channel(s) (real images, but not the model's dataset {source.dataset})"
    return ImageSet(x, None, what)


def folder_images(source: Source, folder: Path, n: int) -> ImageSet:
    """Up to ``n`` image files under ``folder`` (sorted), resized to input/0.875, center-cropped, normalized."""
    from PIL import Image
    from torchvision import transforms

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:n]
    if not files:
        raise ExportError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) found for calibration")
    c, h, _ = source.input_shape
    steps = transforms.Compose(
        [
            transforms.Resize(round(h / 0.875)),
            transforms.CenterCrop(h),
            transforms.ToTensor(),
            transforms.Normalize(source.mean, source.std),
        ]
    )
    mode = "L" if c == 1 else "RGB"
    x = torch.stack([steps(Image.open(p).convert(mode)) for p in files]).numpy().astype(np.float32)
    return ImageSet(x, None, f"{len(files)} images from {folder}")
