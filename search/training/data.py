"""Training data: a fast on-device loader for small datasets, an ImageFolder loader, and held-out splits.

Both loaders speak one protocol: ``len(loader)`` batches per epoch, iteration continues from the current
position (``epoch``, ``batch``), and ``state_dict()`` / ``load_state_dict()`` save and restore that position,
so a run killed mid-epoch resumes on the very next batch. Batch sizes are *global*: with ``world`` ranks each
rank takes its ``1/world`` shard of every batch of one shared permutation, so the optimization does not change
with the number of processes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo.datasets import (
    DatasetError,
    balanced_subset,
    eval_transform,
    get_dataset,
    imagefolder,
    preprocess,
    split_train_val,
    train_transform,
)

Batch = tuple[torch.Tensor, torch.Tensor]
_MIX = 1_000_003  # mixes (seed, epoch, rank) into one generator seed


def _seed(*parts: int) -> int:
    s = 0
    for p in parts:
        s = (s * _MIX + p) % (2**62)
    return s


@dataclass(frozen=True)
class Augment:
    """On-device augmentation of small images: random crop from a zero-padded image, h-flip, random erasing."""

    pad: int = 2
    flip: bool = True
    erase: float = 0.0  # probability of erasing one random rectangle (Zhong et al. 2020), area 2%..33%


NO_AUGMENT = Augment(pad=0, flip=False, erase=0.0)


class TensorLoader:
    """Batches from a uint8 dataset kept whole on ``device``; augmentation and normalization run there too.

    The permutation of epoch ``e`` and all its augmentation draws come from generators seeded by
    ``(seed, e)`` (and the rank), so any position can be recomputed: nothing random is carried in state.
    ``train=False`` walks the data in order, unaugmented, keeping the last partial batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        device: torch.device | str = "cpu",
        train: bool = True,
        augment: Augment = NO_AUGMENT,
        input_size: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        channels_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise DatasetError("TensorLoader needs uint8 images [N, C, H, W] and one label per image")
        if train and batch_size % world:
            raise DatasetError(f"batch size {batch_size} is not divisible by the {world} processes")
        if train and len(labels) < batch_size:
            raise DatasetError(f"{len(labels)} training images are fewer than one batch of {batch_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.train, self.augment, self.seed = batch_size, train, augment, seed
        self.rank, self.world, self.channels_last = rank, world, channels_last
        self.input_size = input_size or images.shape[-1]
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        self.epoch = 0
        self.batch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed or state["batch_size"] != self.batch_size:
            raise DatasetError(
                f"loader position is for seed {state['seed']}, batch {state['batch_size']}; "
                f"this loader has seed {self.seed}, batch {self.batch_size}"
            )
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def _epoch_indices(self) -> torch.Tensor | list[torch.Tensor]:
        """This rank's sample indices of each batch of the current epoch, on the device."""
        n, b = len(self.labels), self.batch_size
        if not self.train:
            per_rank = -(-b // self.world)
            return list(torch.arange(n)[self.rank :: self.world].to(self.device).split(per_rank))
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(self.seed, self.epoch)))
        return perm[: len(self) * b].view(len(self), b)[:, self.rank :: self.world].to(self.device)

    def _epoch_draws(self, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Every augmentation draw of this rank's epoch at once, one row per batch."""
        g = torch.Generator().manual_seed(_seed(self.seed, self.epoch, self.rank + 1))
        a, (h, w) = self.augment, self.images.shape[-2:]
        draws = {
            "dy": torch.randint(0, 2 * a.pad + 1, shape, generator=g),
            "dx": torch.randint(0, 2 * a.pad + 1, shape, generator=g),
            "flip": torch.rand(shape, generator=g) < 0.5,
        }
        # random erasing: area fraction in [0.02, 0.33], log-uniform aspect ratio in [0.3, 3.3]
        apply = torch.rand(shape, generator=g) < a.erase
        area = torch.empty(shape).uniform_(0.02, 0.33, generator=g) * (h * w)
        ratio = torch.exp(torch.empty(shape).uniform_(math.log(0.3), math.log(3.3), generator=g))
        eh = (area * ratio).sqrt().round().clamp(1, h).long()
        ew = (area / ratio).sqrt().round().clamp(1, w).long()
        draws["ey"] = (torch.rand(shape, generator=g) * (h - eh + 1)).long()
        draws["ex"] = (torch.rand(shape, generator=g) * (w - ew + 1)).long()
        draws["eh"] = torch.where(apply, eh, torch.zeros_like(eh))
        draws["ew"] = ew
        return {k: v.to(self.device) for k, v in draws.items()}

    def _augment(self, x: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
        a, (n, c, h, w) = self.augment, x.shape
        if a.pad:  # crop = one gather from the padded image's flattened pixels
            hp, wp = h + 2 * a.pad, w + 2 * a.pad
            xp = F.pad(x, (a.pad, a.pad, a.pad, a.pad)).view(n, c, hp * wp)
            rows = d["dy"][:, None] + torch.arange(h, device=x.device)
            cols = d["dx"][:, None] + torch.arange(w, device=x.device)
            flat = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
            x = xp.gather(2, flat).view(n, c, h, w)
        if a.flip:
            x = torch.where(d["flip"].view(-1, 1, 1, 1), x.flip(3), x)
        return x

    def _erase(self, x: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
        """Zero (= the dataset mean, after normalization) one rectangle per chosen image."""
        h, w = x.shape[-2:]
        ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        in_rows = (ys >= d["ey"][:, None]) & (ys < (d["ey"] + d["eh"])[:, None])
        in_cols = (xs >= d["ex"][:, None]) & (xs < (d["ex"] + d["ew"])[:, None])
        box = in_rows[:, None, :, None] & in_cols[:, None, None, :]
        return x.masked_fill(box, 0.0)

    def __iter__(self) -> Iterator[Batch]:
        batches = self._epoch_indices()
        draws = self._epoch_draws(tuple(batches.shape)) if self.train else {}
        while self.batch < len(batches):
            i = self.batch
            self.batch += 1
            idx = batches[i]
            x, y = self.images[idx], self.labels[idx]
            d = {k: v[i] for k, v in draws.items()}
            if self.train:
                x = self._augment(x, d)
            x = preprocess(x, self.input_size, self.mean, self.std, len(self.mean))
            if self.train and self.augment.erase > 0:
                x = self._erase(x, d)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
        self.epoch += 1
        self.batch = 0


class _EpochSampler(torch.utils.data.Sampler[int]):
    """This rank's indices of one epoch's shared permutation, from a given global batch on."""

    def __init__(self, loader: FolderLoader) -> None:
        self.loader = loader

    def _indices(self) -> torch.Tensor:
        lo = self.loader
        n, b = lo.num_samples, lo.batch_size
        if lo.train:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(lo.seed, lo.epoch)))
            per_batch = perm[: len(lo) * b].view(len(lo), b)[lo.batch :, lo.rank :: lo.world]
            return per_batch.reshape(-1)
        return torch.arange(n)[lo.rank :: lo.world][lo.batch * -(-b // lo.world) :]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices().tolist())

    def __len__(self) -> int:
        return len(self._indices())


class FolderLoader:
    """ImageFolder data (ImageNet layout) through worker processes, with TensorLoader's position protocol.

    The order of samples resumes exactly; the random crops/flips of the workers do not (they use the workers'
    own generators), which is the usual trade-off for JPEG datasets.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        batch_size: int,
        input_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        device: torch.device | str = "cpu",
        train: bool = True,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        workers: int = 4,
        channels_last: bool = False,
    ) -> None:
        if train and batch_size % world:
            raise DatasetError(f"batch size {batch_size} is not divisible by the {world} processes")
        transform = (train_transform if train else eval_transform)(input_size, mean, std)
        self.dataset = imagefolder(root, transform)
        self.batch_size, self.train, self.seed, self.rank, self.world = batch_size, train, seed, rank, world
        self.workers, self.channels_last = workers, channels_last
        self.device = torch.device(device)
        self.epoch = 0
        self.batch = 0

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    state_dict = TensorLoader.state_dict
    load_state_dict = TensorLoader.load_state_dict

    def __iter__(self) -> Iterator[Batch]:
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=-(-self.batch_size // self.world),
            sampler=_EpochSampler(self),
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for x, y in loader:
            self.batch += 1
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)
        self.epoch += 1
        self.batch = 0


Loader = TensorLoader | FolderLoader


@dataclass
class TrainData:
    """Loaders of one training run and what a model trained on them records (classes, mean, std)."""

    train: Loader
    val: Loader | None
    test: Loader
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int


def build_train_data(
    name: str,
    data_dir: str | os.PathLike | None,
    batch_size: int,
    *,
    input_size: int,
    device: torch.device | str = "cpu",
    augment: Augment = NO_AUGMENT,
    seed: int = 0,
    val_size: int = 0,
    split_seed: int = 0,
    limit_train: int | None = None,
    eval_batch_size: int = 1000,
    rank: int = 0,
    world: int = 1,
    workers: int = 4,
    channels_last: bool = False,
) -> TrainData:
    """Train / held-out val / test loaders of a dataset.

    ``val_size`` > 0 holds out a class-balanced part of the training set (fixed ``split_seed``), e.g. the
    5,000 images the architecture search fits its alphas on; ``limit_train`` then keeps a class-balanced
    subset of what remains, for quick runs.
    """
    spec = get_dataset(name)
    mean, std = spec.mean, spec.std
    shard = {"device": device, "rank": rank, "world": world, "channels_last": channels_last}
    if spec.folder is not None:
        if val_size or limit_train:
            raise DatasetError(f"--val-size / --limit-train are supported for in-memory datasets only, not {name}")
        common = {"input_size": input_size, "mean": mean, "std": std, "workers": workers, **shard}
        train = FolderLoader(spec.folder("train", data_dir), batch_size, train=True, seed=seed, **common)
        test = FolderLoader(spec.folder("test", data_dir), eval_batch_size, train=False, **common)
        return TrainData(train, None, test, list(train.dataset.classes), mean, std, len(mean))

    images, labels = spec.arrays("train", data_dir)
    val = None
    common = {"mean": mean, "std": std, "input_size": input_size, **shard}
    if val_size:
        keep, held = split_train_val(labels, val_size, split_seed)
        val = TensorLoader(images[held], labels[held], eval_batch_size, train=False, **common)
        images, labels = images[keep], labels[keep]
    if limit_train:
        keep = balanced_subset(labels, min(limit_train, len(labels)), split_seed)
        images, labels = images[keep], labels[keep]
    train = TensorLoader(images, labels, batch_size, train=True, augment=augment, seed=seed, **common)
    test_images, test_labels = spec.arrays("test", data_dir)
    test = TensorLoader(test_images, test_labels, eval_batch_size, train=False, **common)
    return TrainData(train, val, test, list(spec.classes or ()), mean, std, images.shape[1])
