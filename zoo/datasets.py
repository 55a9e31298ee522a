"""The dataset registry: Fashion-MNIST (IDX), CIFAR-10 (binary batches), ImageNet-style folders, synthetic.

Each dataset is one ``DatasetSpec``: its loader (whole in memory, or an ImageFolder tree per split), classes,
native input size, normalization and how its photos look; ``register_dataset`` adds one (docs/architecture.md).
The train and eval transforms of folder images are defined here once (``train_transform``, ``eval_transform``)
and used by training, evaluation, export's parity/calibration images and the demo.

Small datasets load whole into uint8 tensors ``[N, C, H, W]`` so that training can keep them on the GPU
(``search.training.data.TensorLoader``) and evaluation can normalize a whole batch at once. Preprocessing follows a
model's metadata: ``len(mean)`` is the channel count (grayscale <-> RGB converted as needed), ``input_size``
the side the images are resized to, ``mean``/``std`` the normalization.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

FMNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_DIR_ENV = "PROXYLESS_FMNIST_DIR"
FMNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SYNTHETIC_MEAN = (0.5,)
SYNTHETIC_STD = (0.25,)

CROP_FRACTION = 0.875  # eval: resize the shorter side to size / 0.875, center crop

_IDX_UBYTE = 0x08
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetError(ValueError):
    """A dataset that is missing, malformed or asked for in a way it cannot be served."""


def _check_split(split: str, allowed: Sequence[str] = ("train", "test")) -> None:
    if split not in allowed:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(allowed)}")


# ---------------------------------------------------------------- Fashion-MNIST (IDX files)


def fmnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where the IDX files are: the argument, else $PROXYLESS_FMNIST_DIR, else the Debian package's folder."""
    return Path(data_dir or os.environ.get(FMNIST_DIR_ENV) or FMNIST_DEFAULT_DIR)


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Parse one IDX file (optionally gzipped) of unsigned bytes with ``ndim`` dimensions, checking its header.

    The header is: two zero bytes, the type code (0x08 = ubyte), the dimension count, then one big-endian
    uint32 per dimension; the payload must hold exactly the product of those sizes.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as e:  # gzip raises EOFError / BadGzipFile (an OSError) on truncated data
        raise DatasetError(f"{path}: cannot read IDX file ({e})") from e
    head = 4 + 4 * ndim
    if len(raw) >= 4 and (raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] != ndim):
        raise DatasetError(
            f"{path}: bad IDX magic {raw[:4].hex()} (expected 0000{_IDX_UBYTE:02x}{ndim:02x}: ubyte, {ndim}-D)"
        )
    if len(raw) < head:
        raise DatasetError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - head != expected:
        raise DatasetError(f"{path}: IDX header says shape {shape} ({expected} bytes), payload has {len(raw) - head}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(
        f"Fashion-MNIST file {directory / (stem + '.gz')} not found; install the Debian package "
        f"dataset-fashion-mnist or point --data-dir / ${FMNIST_DIR_ENV} at a folder with the IDX files"
    )


def load_fashion_mnist(split: str, data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The train (60,000) or test (10,000) split: uint8 images ``[N, 28, 28]`` and int64 labels ``[N]``."""
    _check_split(split)
    directory = fmnist_dir(data_dir)
    images_file, labels_file = (_find(directory, stem) for stem in _FMNIST_FILES[split])
    images, labels = read_idx(images_file, 3), read_idx(labels_file, 1)
    if len(images) != len(labels):
        raise DatasetError(f"{directory}: {len(images)} images but {len(labels)} labels in the {split} split")
    if labels.size and labels.max() >= len(FMNIST_CLASSES):
        raise DatasetError(f"{labels_file}: label {labels.max()} out of range 0..{len(FMNIST_CLASSES) - 1}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------- CIFAR-10 (binary version)

_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}


def load_cifar10(split: str, data_dir: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from the *binary* release (``cifar-10-batches-bin``: records of 1 label byte + 3072 pixels).

    The binary release is read as raw bytes; the python release would need unpickling, which we refuse.
    ``data_dir`` is the ``cifar-10-batches-bin`` folder or its parent.
    """
    _check_split(split)
    directory = Path(data_dir)
    if (directory / "cifar-10-batches-bin").is_dir():
        directory = directory / "cifar-10-batches-bin"
    chunks = []
    for name in _CIFAR_FILES[split]:
        path = directory / name
        if not path.is_file():
            raise DatasetError(f"CIFAR-10 file {path} not found (expected the binary release, cifar-10-batches-bin)")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % _CIFAR_RECORD:
            raise DatasetError(f"{path}: {raw.size} bytes is not a whole number of {_CIFAR_RECORD}-byte records")
        chunks.append(raw.reshape(-1, _CIFAR_RECORD))
    records = np.concatenate(chunks)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        raise DatasetError(f"{directory}: label {labels.max()} out of range 0..9 (not CIFAR-10 binary data?)")
    images = records[:, 1:].reshape(-1, 3, 32, 32).copy()
    return torch.from_numpy(images), torch.from_numpy(labels)


# ---------------------------------------------------------------- synthetic (tests)


def make_synthetic(
    split: str, n: int | None = None, num_classes: int = 10, channels: int = 1, size: int = 28, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic, learnable images: each class is a fixed smooth random template plus per-image noise.

    Templates depend only on ``seed`` (shared by both splits); the noise and labels also on the split, so the
    test split is new images of the same classes. Default sizes: 2,000 train / 500 test.
    """
    _check_split(split)
    n = n if n is not None else (2000 if split == "train" else 500)
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, 7, 7, generator=g)
    templates = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    g.manual_seed(seed * 2 + (1 if split == "train" else 2))
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=g)]
    noise = torch.rand(n, channels, size, size, generator=g)
    images = (0.7 * templates[labels] + 0.3 * noise) * 255
    return images.round().clamp(0, 255).to(torch.uint8), labels.to(torch.int64)


# ---------------------------------------------------------------- the registry

Arrays = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset. ``load(split, data_dir)``: uint8 ``[N, C, H, W]`` images and int64 labels (small datasets);
    ``folder(split, data_dir)``: the ImageFolder tree of a split (large ones); exactly one of them is set.
    ``classes`` None: read from the folder. ``dark_background``: light objects on black (the demo converts
    photos to look so)."""

    name: str
    channels: int
    size: int
    classes: tuple[str, ...] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load: Callable[[str, str | os.PathLike | None], Arrays] | None = field(default=None, repr=False)
    folder: Callable[[str, str | os.PathLike | None], Path] | None = field(default=None, repr=False)
    dark_background: bool = False

    def __post_init__(self) -> None:
        if (self.load is None) == (self.folder is None):
            raise DatasetError(f"dataset {self.name}: give exactly one of load (in memory) and folder (ImageFolder)")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise DatasetError(f"dataset {self.name}: mean/std need one value per channel ({self.channels})")

    @property
    def in_memory(self) -> bool:
        return self.load is not None

    def arrays(self, split: str, data_dir: str | os.PathLike | None = None) -> Arrays:
        """The split whole in memory (in-memory datasets only)."""
        _check_split(split)
        if self.load is None:
            raise DatasetError(f"{self.name} is an ImageFolder dataset and is not loaded into memory")
        return self.load(split, data_dir)


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    _DATASETS[spec.name] = spec
    return spec


def get_dataset(name: str) -> DatasetSpec:
    try:
        return _DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(_DATASETS)}") from None


def dataset_names() -> tuple[str, ...]:
    return tuple(_DATASETS)


def dataset_for_shape(input_shape: tuple[int, int, int]) -> str:
    """A network that records no dataset: the first registered one of its (C, H, W), else the first of its
    channel count (a 1x8x8 test net normalizes as Fashion-MNIST)."""
    c, h, w = (int(v) for v in input_shape)
    same = [d.name for d in _DATASETS.values() if (d.channels, d.size, d.size) == (c, h, w)]
    channels = [d.name for d in _DATASETS.values() if d.channels == c]
    if not same + channels:
        raise DatasetError(f"no registered dataset has {c}-channel images; register one (zoo.datasets)")
    return (same + channels)[0]


def load_arrays(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Arrays:
    """A small dataset whole in memory: uint8 images ``[N, C, H, W]`` and int64 labels ``[N]``."""
    return get_dataset(name).arrays(split, data_dir)


def _fashion_mnist(split: str, data_dir: str | os.PathLike | None) -> Arrays:
    images, labels = load_fashion_mnist(split, data_dir)
    return images.unsqueeze(1), labels


def _cifar10(split: str, data_dir: str | os.PathLike | None) -> Arrays:
    if data_dir is None:
        raise DatasetError("cifar10 needs --data-dir (the cifar-10-batches-bin folder or its parent)")
    return load_cifar10(split, data_dir)


def _synthetic(split: str, data_dir: str | os.PathLike | None) -> Arrays:
    return make_synthetic(split)


register_dataset(
    DatasetSpec("fashion-mnist", 1, 28, FMNIST_CLASSES, FMNIST_MEAN, FMNIST_STD, _fashion_mnist, dark_background=True)
)
register_dataset(DatasetSpec("cifar10", 3, 32, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, _cifar10))
register_dataset(
    DatasetSpec("imagenet", 3, 224, None, IMAGENET_MEAN, IMAGENET_STD, folder=lambda s, d: imagenet_split_dir(d, s))
)
register_dataset(
    DatasetSpec("synthetic", 1, 28, tuple(f"class{i}" for i in range(10)), SYNTHETIC_MEAN, SYNTHETIC_STD, _synthetic)
)


def balanced_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` indices drawn class by class in turn (round robin over a seeded shuffle), sorted ascending.

    Each class gets ``n // classes`` or one more, unless it runs out, when the others make up the rest.
    The same labels, n and seed always give the same indices.
    """
    total = len(labels)
    if not 0 < n <= total:
        raise DatasetError(f"subset size {n} must be in 1..{total}")
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    shuffled = labels[perm]
    # rank of each shuffled item among the items of its own class
    order = torch.argsort(shuffled, stable=True)
    sorted_labels = shuffled[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(total) - starts
    classes = int(labels.max()) + 1
    key = rank * classes + shuffled  # round robin: every class's first item, then every class's second, ...
    chosen = perm[torch.argsort(key, stable=True)[:n]]
    return torch.sort(chosen).values


def split_train_val(labels: torch.Tensor, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced held-out validation split of a training set: (train indices, val indices)."""
    val = balanced_subset(labels, val_size, seed)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().squeeze(1), val


def preprocess(
    images: torch.Tensor, input_size: int, mean: torch.Tensor, std: torch.Tensor, channels: int
) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> normalized float ``[B, channels, input_size, input_size]`` on their device."""
    x = images.float().div_(255)
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1 and x.shape[1] == 3:  # ITU-R 601 luma, as PIL's "L" conversion
            x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise DatasetError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True)
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


class TensorImageDataset(Dataset):
    """In-memory uint8 images served normalized; ``__getitems__`` lets a DataLoader preprocess a batch at once."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise DatasetError("TensorImageDataset needs uint8 images [N, C, H, W] and one label per image")
        if len(mean) != len(std):
            raise DatasetError(f"mean {tuple(mean)} and std {tuple(std)} differ in length")
        self.images, self.labels, self.input_size = images, labels, input_size
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = preprocess(self.images[i : i + 1], self.input_size, self.mean, self.std, len(self.mean))
        return x[0], int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = preprocess(self.images[idx], self.input_size, self.mean, self.std, len(self.mean))
        return list(zip(x.unbind(0), self.labels[idx].tolist(), strict=True))


def _to_channels(channels: int) -> Callable[[Any], Any]:
    from torchvision import transforms

    return transforms.Grayscale(1) if channels == 1 else transforms.Lambda(lambda im: im.convert("RGB"))


def eval_geometry(size: int) -> Callable[[Any], Any]:
    """PIL image -> PIL image: shorter side resized to ``size / CROP_FRACTION``, then the center ``size`` square."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(round(size / CROP_FRACTION)), transforms.CenterCrop(size)])


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], torch.Tensor]:
    """The eval transform of folder images (``len(mean)`` channels), the one definition every package uses."""
    from torchvision import transforms

    return transforms.Compose(
        [_to_channels(len(mean)), eval_geometry(size), transforms.ToTensor(), transforms.Normalize(mean, std)]
    )


def train_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], torch.Tensor]:
    """The train transform of folder images: random resized crop and horizontal flip, then normalized."""
    from torchvision import transforms

    steps = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
    return transforms.Compose([_to_channels(len(mean)), *steps, transforms.Normalize(mean, std)])


def imagefolder(root: str | os.PathLike, transform: Callable[[Any], torch.Tensor]) -> Dataset:
    """torchvision ImageFolder with ``transform``; a clear error when the folder is missing."""
    from torchvision import datasets

    if not Path(root).is_dir():
        raise DatasetError(f"ImageFolder directory {root} not found")
    return datasets.ImageFolder(str(root), transform=transform)


def imagenet_split_dir(data_dir: str | os.PathLike | None, split: str) -> Path:
    """ImageNet's ``train``/``val`` folder under ``data_dir`` (split ``test`` reads ``val``, as is usual)."""
    _check_split(split)
    if data_dir is None:
        raise DatasetError("imagenet needs --data-dir (a folder with train/ and val/ ImageFolder trees)")
    return Path(data_dir) / ("train" if split == "train" else "val")


def build_eval_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    limit: int | None = None,
    subset_seed: int = 0,
) -> Dataset:
    """The (normalized CxHxW float, label) dataset a model of this input size/mean/std is evaluated on.

    ``limit`` takes a fixed class-balanced subset (``subset_seed``), e.g. for CI.
    """
    spec = get_dataset(name)
    if spec.folder is not None:
        ds = imagefolder(spec.folder(split, data_dir), eval_transform(input_size, mean, std))
        labels = torch.tensor(ds.targets)
    else:
        images, labels = spec.arrays(split, data_dir)
        ds = TensorImageDataset(images, labels, input_size, mean, std)
    if limit is None or limit >= len(labels):
        return ds
    return torch.utils.data.Subset(ds, balanced_subset(labels, limit, subset_seed).tolist())
