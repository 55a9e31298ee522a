"""A trained elastic supernet's folder as zoo sees it: JSON and sha256 only, for publishing it and its card.

``search.elastic`` writes the folder (``supernet.safetensors`` + ``supernet.json``, then optionally the accuracy
predictor and the CSV of measured subnets it was fit on) and loads it; zoo is the foundation package and must not
import ``search``, so the file names and formats are repeated here (a test checks they agree). ``read_supernet``
refuses a torn folder (weights that are not the ones ``supernet.json`` names, a predictor fit for another
supernet) in one line, before anything is uploaded.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.inputs import InputError, count, csv_stream, number, read_json
from zoo.weights import MAX_CONFIG_BYTES, WeightsError, sha256_file

FORMAT = "proxyless-elastic-supernet/1"
WEIGHTS = "supernet.safetensors"
CONFIG = "supernet.json"
PREDICTOR_FORMAT = "proxyless-acc-predictor/1"
PREDICTOR_WEIGHTS = "predictor.safetensors"
PREDICTOR_CONFIG = "predictor.json"
SUBNETS_CSV = "subnet_accuracy.csv"
MAX_SUBNETS = 10**6  # subnets a predictor can have been fit on (elastic-predictor --subnets is bounded far below)
FILES = (WEIGHTS, CONFIG, PREDICTOR_WEIGHTS, PREDICTOR_CONFIG, SUBNETS_CSV)  # what a publish of a supernet carries


class SupernetFolderError(WeightsError):
    """A supernet folder that cannot be published as it is; the message is one line."""


@dataclass(frozen=True)
class SpaceSummary:
    """The elastic space as the card describes it (from ``space_definition``)."""

    name: str
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    min_depths: tuple[int, ...]
    max_depths: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[int, ...]
    baseline_op: tuple[int, int]
    input_size: tuple[int, int, int]
    num_classes: int

    @property
    def subnets(self) -> int:
        """Distinct subnets: per stage, every depth with every kernel x expand per active layer."""
        per_layer = len(self.kernels) * len(self.expands)
        stages = zip(self.min_depths, self.max_depths, strict=True)
        return math.prod(sum(per_layer**d for d in range(lo, hi + 1)) for lo, hi in stages)

    def _subnet(self, depths: tuple[int, ...], kernel: int, expand: int) -> str:
        """``search.elastic.space.Subnet``'s text form of a uniform subnet (inactive genes: the smallest choice)."""
        kernels, expands = [], []
        for depth, layers in zip(depths, self.max_depths, strict=True):
            kernels += [kernel] * depth + [self.kernels[0]] * (layers - depth)
            expands += [expand] * depth + [self.expands[0]] * (layers - depth)
        text = lambda genes: "".join(map(str, genes))  # noqa: E731
        return f"d{text(depths)}-k{text(kernels)}-e{text(expands)}"

    @property
    def largest(self) -> str:
        return self._subnet(self.max_depths, max(self.kernels), max(self.expands))

    @property
    def smallest(self) -> str:
        return self._subnet(self.min_depths, min(self.kernels), min(self.expands))

    @property
    def baseline(self) -> str:
        return self._subnet(self.max_depths, *self.baseline_op)


@dataclass(frozen=True)
class PredictorSummary:
    """The accuracy predictor published beside the supernet: its held-out figures (accuracies as fractions)."""

    sha256: str
    train_subnets: int
    heldout_subnets: int
    rmse: float
    kendall_tau: float
    heldout_std: float


@dataclass(frozen=True)
class SupernetFolder:
    """A checked supernet folder: what it holds, the space, the recipe and the recorded figures."""

    path: Path
    sha256: str
    space: SpaceSummary
    recipe: dict[str, Any]
    validation: dict[str, Any]
    predictor: PredictorSummary | None
    measured_subnets: int | None  # rows of subnet_accuracy.csv, when present
    files: tuple[str, ...]
    config: dict[str, Any]  # supernet.json as written by search.elastic (compared with the Hub's copy)


def is_supernet_folder(path: str | Path) -> bool:
    """A folder holding ``supernet.json`` or ``supernet.safetensors`` (the latter alone: a torn one, refused)."""
    path = Path(path)
    return path.is_dir() and ((path / CONFIG).is_file() or (path / WEIGHTS).is_file())


def read_format_json(file: Path, fmt: str) -> dict[str, Any]:
    """The JSON object in ``file`` (read through the config reader's size and type guards), refused in one line
    unless it declares ``fmt``."""
    if not os.path.lexists(file):
        raise SupernetFolderError(f"{file}: missing (a supernet folder holds {WEIGHTS} + {CONFIG})")
    try:
        data = read_json(file, f"a {fmt} file", MAX_CONFIG_BYTES)
    except InputError as e:
        raise SupernetFolderError(str(e)) from None
    if data.get("format") != fmt:
        raise SupernetFolderError(f"{file}: not a {fmt} file")
    return data


def _check_sha(weights: Path, expected: Any, config: str, remedy: str) -> str:
    """The sha256 of ``weights``, refused unless it is the one ``config`` names (``remedy``: how to mend it)."""
    if not weights.is_file():
        raise SupernetFolderError(f"{weights}: missing, but {config} is there (a torn folder: {remedy})")
    sha = sha256_file(weights)
    if sha != expected:
        raise SupernetFolderError(
            f"{weights}: sha256 {sha[:12]}... is not the {str(expected)[:12]}... that {config} names "
            f"(a torn or corrupt folder: {remedy})"
        )
    return sha


def _space(definition: Any, file: Path) -> SpaceSummary:
    """What the card shows of ``supernet.json``'s ``space_definition`` (``search.elastic.space.ElasticSpace``)."""
    try:
        b = definition["backbone"]
        return SpaceSummary(
            name=_text(definition["name"], "name"),
            widths=_ints(b["widths"], "backbone.widths"),
            strides=_ints(b["strides"], "backbone.strides"),
            min_depths=_ints(definition["min_depths"], "min_depths"),
            max_depths=_ints(b["depths"], "backbone.depths"),
            kernels=_ints(definition["kernels"], "kernels"),
            expands=_ints(definition["expands"], "expands"),
            baseline_op=_ints(definition["baseline_op"], "baseline_op", 2),
            input_size=(_int(b["in_chans"], "in_chans"), *(_int(b["input_size"], "input_size"),) * 2),
            num_classes=_int(b["num_classes"], "num_classes"),
        )
    except (KeyError, TypeError, InputError) as e:
        raise SupernetFolderError(f"{file}: its space_definition is incomplete ({type(e).__name__}: {e})") from None


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {value!r}")
    return value


def _int(value: Any, name: str) -> int:
    return count(value, name, 0, 2**20)


def _ints(value: Any, name: str, length: int | None = None) -> tuple[int, ...]:
    """A list of small non-negative integers (of ``length`` items where given)."""
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise InputError(f"{name} must be a list of {length or 'some'} integers, got {value!r}")
    return tuple(_int(v, name) for v in value)


def _predictor(folder: Path, supernet_sha: str) -> PredictorSummary | None:
    """The predictor beside the supernet, checked: its weights, and that it was fit for this supernet's."""
    file = folder / PREDICTOR_CONFIG
    if not file.is_file():
        if (folder / PREDICTOR_WEIGHTS).exists():
            raise SupernetFolderError(f"{folder / PREDICTOR_WEIGHTS}: there is no {PREDICTOR_CONFIG} beside it")
        return None
    config = read_format_json(file, PREDICTOR_FORMAT)
    if config.get("supernet_sha256") != supernet_sha:
        raise SupernetFolderError(
            f"{file}: fit for another supernet (sha256 {str(config.get('supernet_sha256'))[:12]}...): "
            f"fit it again with `proxyless search elastic-predictor --supernet {folder}`"
        )
    refit = f"fit it again with `proxyless search elastic-predictor --supernet {folder}`"
    sha = _check_sha(folder / PREDICTOR_WEIGHTS, config.get("weights_sha256"), PREDICTOR_CONFIG, refit)
    return PredictorSummary(sha, **_fit_record(config.get("fit"), file))


def _fit_record(fit: Any, file: Path) -> dict[str, Any]:
    """The predictor's held-out figures, each a finite number in range (a card must never say "RMSE nan")."""
    if not isinstance(fit, dict):
        raise SupernetFolderError(f"{file}: no 'fit' object (the predictor's held-out figures)")
    try:
        return {
            "train_subnets": count(fit["train_subnets"], "fit.train_subnets", 1, MAX_SUBNETS),
            "heldout_subnets": count(fit["heldout_subnets"], "fit.heldout_subnets", 1, MAX_SUBNETS),
            "rmse": number(fit["rmse"], "fit.rmse", 0.0, 1.0),
            "kendall_tau": number(fit["kendall_tau"], "fit.kendall_tau", -1.0, 1.0),
            "heldout_std": number(fit["heldout_std"], "fit.heldout_std", 0.0, 1.0),
        }
    except KeyError as e:
        raise SupernetFolderError(f"{file}: its fit record lacks {e}") from None
    except InputError as e:
        raise SupernetFolderError(f"{file}: {e}") from None


def _measured(file: Path) -> int | None:
    """Rows of ``subnet_accuracy.csv``, None without one."""
    if not os.path.lexists(file):
        return None
    try:
        reader = csv.reader(csv_stream(file, "the subnet,val_top1 CSV that elastic-predictor writes"))
    except InputError as e:
        raise SupernetFolderError(str(e)) from None
    if next(reader, None) != ["subnet", "val_top1"]:
        raise SupernetFolderError(f"{file}: not the subnet,val_top1 CSV that elastic-predictor writes")
    return sum(1 for row in reader if row)


def read_supernet(folder: str | Path) -> SupernetFolder:
    """The checked supernet folder: config, weights' sha256, predictor (if any) fit for these weights."""
    folder = Path(folder)
    config = read_format_json(folder / CONFIG, FORMAT)
    sha = _check_sha(folder / WEIGHTS, config.get("weights_sha256"), CONFIG, "save the supernet again")
    metadata = config.get("metadata") if isinstance(config.get("metadata"), dict) else {}
    for key in ("recipe", "validation"):
        if not isinstance(metadata.get(key) or {}, dict):
            raise SupernetFolderError(f"{folder / CONFIG}: metadata.{key} must be an object")
    return SupernetFolder(
        path=folder,
        sha256=sha,
        space=_space(config.get("space_definition"), folder / CONFIG),
        recipe=dict(metadata.get("recipe") or {}),
        validation=dict(metadata.get("validation") or {}),
        predictor=_predictor(folder, sha),
        measured_subnets=_measured(folder / SUBNETS_CSV),
        files=tuple(f for f in FILES if (folder / f).is_file()),
        config=config,
    )
