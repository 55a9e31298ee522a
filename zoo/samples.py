"""Real images for export parity checks, int8 calibration and accuracy, preprocessed as a network expects.

The network's own dataset (from the dataset registry) where its data is on this machine: test split for parity
and accuracy, train split for calibration. A folder given instead (``--parity-data DIR``,
``--calibration-data DIR``: an ImageFolder tree or loose image files) goes through the dataset's eval transform.
Without either, the first registered in-memory dataset whose data is here stands in, resized to the input and
converted to its channels: not the network's distribution, and no labels (the description says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.datasets import (
    DatasetError,
    balanced_subset,
    dataset_for_shape,
    dataset_names,
    eval_transform,
    get_dataset,
    preprocess,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLIT = {"parity": "test", "evaluation": "test", "calibration": "train"}


@dataclass(frozen=True)
class Preprocessing:
    """What a network expects: its dataset's name, input (C, H, W), normalization and class names."""

    dataset: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None = None

    @classmethod
    def of(cls, model: nn.Module, input_shape: tuple[int, int, int]) -> Preprocessing:
        """From the network's registry ``info`` where it has one, else its dataset guessed from the shape."""
        info: Any = getattr(model, "info", None)
        if info is not None:
            shape = tuple(int(v) for v in info.input_size)
            return cls(info.dataset, shape, tuple(info.mean), tuple(info.std), tuple(info.categories))  # type: ignore[arg-type]
        spec = get_dataset(dataset_for_shape(input_shape))
        return cls(spec.name, tuple(input_shape), spec.mean, spec.std, spec.classes)  # type: ignore[arg-type]


@dataclass
class ImageSet:
    """Normalized float32 NCHW images; labels only where they are the network's own classes."""

    x: np.ndarray
    labels: np.ndarray | None
    description: str


def sample_images(prep: Preprocessing, purpose: str, n: int | None, folder: Path | None = None) -> ImageSet:
    """``n`` images (all when None) for ``purpose`` (parity, evaluation or calibration)."""
    if purpose not in SPLIT:
        raise DatasetError(f"unknown purpose {purpose!r}; expected one of {', '.join(SPLIT)}")
    if folder is not None:
        return folder_images(prep, Path(folder), n)
    split = SPLIT[purpose]
    try:
        return _dataset_images(prep, prep.dataset, split, n)
    except DatasetError as own:
        for name in dataset_names():
            if name != prep.dataset and get_dataset(name).in_memory:
                try:
                    return _dataset_images(prep, name, split, n)
                except DatasetError:
                    continue
        raise DatasetError(f"no images for {purpose}: {own}; pass a folder of the network's images") from None


def _dataset_images(prep: Preprocessing, name: str, split: str, n: int | None) -> ImageSet:
    spec = get_dataset(name)
    if spec.folder is not None:
        return folder_images(prep, spec.folder(split, None), n)
    images, labels = spec.arrays(split)
    if n is not None and n < len(labels):
        idx = balanced_subset(labels, n)
        images, labels = images[idx], labels[idx]
    c, h, w = prep.input_shape
    if h != w:
        raise DatasetError(f"non-square input {h}x{w} is not supported")
    x = preprocess(images, h, torch.tensor(prep.mean), torch.tensor(prep.std), c).numpy().astype(np.float32)
    what = f"{name} {split} split, {len(labels)} images"
    if name == prep.dataset:
        return ImageSet(x, labels.numpy(), what)
    what += f" resized to {h}x{w}, {c} channel(s): a stand-in, not the network's dataset {prep.dataset}"
    return ImageSet(x, None, what)


def folder_images(prep: Preprocessing, folder: Path, n: int | None) -> ImageSet:
    """Up to ``n`` image files under ``folder`` (sorted) through the eval transform; labelled when ``folder`` is
    an ImageFolder tree whose class folders are the network's classes."""
    from PIL import Image

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    if n is not None and n < len(files):  # every n-th file, so that each class of a sorted tree is represented
        files = [files[round(i * len(files) / n)] for i in range(n)]
    steps = eval_transform(prep.input_shape[1], prep.mean, prep.std)
    x = torch.stack([steps(Image.open(p)) for p in files]).numpy().astype(np.float32)
    labels = _folder_labels(prep, folder, files)
    return ImageSet(x, labels, f"{len(files)} images from {folder}")


def _folder_labels(prep: Preprocessing, folder: Path, files: list[Path]) -> np.ndarray | None:
    classes = prep.classes or ()
    names = [p.parent.name if p.parent != folder else None for p in files]
    if not classes or any(name not in classes for name in names):
        return None
    return np.array([classes.index(name) for name in names], dtype=np.int64)
