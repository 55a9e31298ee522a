"""Accuracy of a network on a dataset, and ``proxyless zoo eval NAME_OR_DIR``.

``accumulate`` sums loss / top-1 / top-5 hits over batches so that distributed training can add the sums of
its ranks before ``summarize``; ``evaluate`` is the single-process convenience over a Dataset.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from zoo.datasets import DatasetError, build_eval_dataset, dataset_names, get_dataset
from zoo.options import add_options, from_args, option


def accumulate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``[loss sum, top-1 hits, top-5 hits, count]`` (float64, on ``device``) of ``model`` in eval mode."""
    device = torch.device(device)
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for x, y in batches:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    logits = model(x)
                logits = logits.float()
                k = min(5, logits.shape[1])
                hits = (logits.topk(k, dim=1).indices == y[:, None]).float()
                sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
                sums[1] += hits[:, 0].sum().double()
                sums[2] += hits.sum().double()
                sums[3] += len(y)
    finally:
        model.train(was_training)
    return sums


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of a network on a split: top-1 / top-5 as fractions, the image count and the mean cross-entropy.
    ``to_dict`` is its one JSON form (``zoo eval --json``, training logs, bundles)."""

    top1: float
    top5: float
    n: int
    loss: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(sums: torch.Tensor) -> EvalResult:
    """The result from ``accumulate``'s sums."""
    loss, top1, top5, n = sums.tolist()
    if n == 0:
        raise DatasetError("evaluated on zero images")
    return EvalResult(top1 / n, top5 / n, int(n), loss / n)


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    workers: int = 0,
    progress: str | None = None,
) -> EvalResult:
    """Top-1 / top-5 accuracy (fractions), image count and mean cross-entropy of ``model`` on ``dataset``;
    ``progress``: a bar with that label on stderr (a test split takes minutes on a small CPU)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    batches = tqdm(loader, desc=progress, unit="batch", file=sys.stderr, disable=progress is None)
    return summarize(accumulate(model, batches, device))


def right_answers(model: nn.Module, batches: Iterable[tuple[torch.Tensor, ...]]) -> np.ndarray:
    """Which images, in order, ``model`` (in eval mode) classifies right: the input of a paired test between nets
    scored on the same images (McNemar). Extra fields of a batch (indices) are ignored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return torch.cat([model(x).argmax(1) == y for x, y, *_ in batches]).numpy()
    finally:
        model.train(was_training)


# ---------------------------------------------------------------- CLI


def load_for_eval(name_or_dir: str) -> tuple[nn.Module, Any]:
    """A registered model with its registered weights, or the model a weights directory describes."""
    from zoo.registry import build_network, create_model, weights_dir_info
    from zoo.weights import load_pretrained

    if Path(name_or_dir).is_dir():
        info = weights_dir_info(name_or_dir)
        model = build_network(info.arch)
        load_pretrained(model, name_or_dir)
        model.info = info
        return model, info
    model = create_model(name_or_dir, pretrained=True)
    return model, model.info


@dataclass(frozen=True)
class EvalOptions:
    """``proxyless zoo eval``: each field one option (zoo.options)."""

    model: str = option(
        MISSING, "registered model name, or a weights directory", positional=True, metavar="NAME_OR_DIR"
    )
    dataset: str | None = option(None, "default: the model's own dataset", choices=dataset_names)
    split: str = option("test", "default: test (imagenet: val/)", choices=("train", "test"))
    data_dir: str | None = option(None, "dataset folder (Fashion-MNIST default: the Debian package's)")
    limit: int | None = option(None, "evaluate a fixed class-balanced subset of N images (for CI)")
    subset_seed: int = option(0, "seed of the --limit subset")
    batch_size: int = option(256, "images per forward pass")
    device: str = option("cpu", "cpu or cuda[:N]")
    workers: int = option(0, "DataLoader worker processes, one thread each (ImageFolder datasets)")
    json: bool = option(False, "end with one line of JSON", switch=True)
    no_progress: bool = option(False, "no progress bar on stderr", switch=True)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="top-1 / top-5 accuracy of a model on a dataset's test split",
        description="Evaluate a zoo model (with its registered weights) or a weights directory. Preprocessing "
        "(channels, input size, mean/std) follows the model's metadata; the dataset defaults to the one it was "
        "trained on. The last line (with --json) is JSON; top1/top5 are fractions. A progress bar on stderr "
        "(--no-progress: none). Threads: PyTorch's default, one per core (OMP_NUM_THREADS sets it); --workers "
        "loader processes add one thread each.",
    )
    add_options(p, EvalOptions)
    p.set_defaults(func=lambda args: _run(from_args(EvalOptions, args)))


def _run(args: EvalOptions) -> int:
    if args.limit is not None and args.limit < 1:
        raise DatasetError(f"--limit must be >= 1, got {args.limit}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise DatasetError(f"--device {args.device!r}: expected cpu or cuda[:N]") from None
    if device.type not in ("cpu", "cuda"):
        raise DatasetError(f"--device {args.device!r}: expected cpu or cuda[:N]")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DatasetError("--device cuda asked for, but torch sees no CUDA device")
    if args.batch_size < 1:
        raise DatasetError(f"--batch-size must be >= 1, got {args.batch_size}")
    model, info = load_for_eval(args.model)
    name = args.dataset or info.dataset
    if name not in dataset_names():
        names = ", ".join(dataset_names())
        raise DatasetError(f"{args.model} was trained on {name!r}; pass --dataset (one of {names})")
    classes = get_dataset(name).classes
    if classes is not None and len(classes) != info.num_classes:
        raise DatasetError(f"{args.model} has {info.num_classes} classes, {name} has {len(classes)}")
    channels, height, width = info.input_size
    if height != width or len(info.mean) != channels:
        raise DatasetError(f"{args.model}: unsupported input {info.input_size} with mean {info.mean}")
    dataset = build_eval_dataset(
        name, args.split, args.data_dir, height, info.mean, info.std, limit=args.limit, subset_seed=args.subset_seed
    )
    start = time.perf_counter()
    model = model.to(args.device, memory_format=torch.channels_last)  # depthwise convs are much faster in NHWC
    label = None if args.no_progress else f"eval {info.name}"
    result = evaluate(model, dataset, args.batch_size, args.device, args.workers, progress=label)
    seconds = time.perf_counter() - start
    print(
        f"{info.name} on {name} {args.split} ({result.n} images): top-1 {result.top1 * 100:.2f}%, "
        f"top-5 {result.top5 * 100:.2f}%, loss {result.loss:.4f} ({seconds:.1f} s)"
    )
    if args.json:
        record = {"model": info.name, "dataset": name, "split": args.split, **result.to_dict()}
        record |= {"limit": args.limit, "subset_seed": args.subset_seed, "seconds": round(seconds, 3)}
        print(json.dumps(record))
    return 0
