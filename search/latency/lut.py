"""Latency lookup table (LUT) file format ``proxyless-lut/1``: one JSON file per space, device, runtime and batch.

A table is a header (where and how it was measured, and of which search space) plus one entry per distinct op
shape: the op and its parameters, input/output shapes (C, H, W per sample, or C for vectors), the batch size and
the measured mean/median/std (and min) in ms with the sample count. Layers with equal shapes share one entry, as in the
authors' mobile table. The ``zero`` op is stored with 0 ms and count 0: the network skips that layer, nothing runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from search.space import SearchSpace
from zoo.files import atomic_write
from zoo.inputs import InputError, count, number, read_json

FORMAT = "proxyless-lut/1"
OPS = ("stem", "mbconv", "zero", "feature_mix", "classifier")
STATISTICS = ("median", "min", "mean")
MAX_MS = 1e6  # a latency above 1000 s per op is a broken table, not a slow device
MAX_SIZE = 2**20  # channels, spatial sizes, kernels, batch, threads: far above any real op


class LatencyError(ValueError):
    """A latency table or model that cannot answer the question asked (wrong space, missing entry, bad file)."""


def space_config(space: SearchSpace) -> dict[str, Any]:
    """The space's full definition as JSON gives it back: a table is refused for any other definition."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(space).items()}


@dataclass(frozen=True)
class OpKey:
    """What an op is, independent of where it was timed: the lookup key of a table entry.

    ``stem``: conv k x k / stride + BN + ReLU6. ``mbconv``: MBConv body with expand, kernel, stride and
    ``skip`` (identity shortcut, its add included). ``feature_mix``: 1x1 conv + BN + ReLU6. ``classifier``: global
    average pool + linear layer.
    """

    op: str
    input: tuple[int, ...]
    output: tuple[int, ...]
    kernel: int = 0
    expand: int = 0
    stride: int = 1
    skip: bool = False

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise LatencyError(f"unknown op {self.op!r}; known: {', '.join(OPS)}")

    def __str__(self) -> str:
        """Readable and unique, in the style of the authors' keys (shapes as HxWxC)."""

        def shape(s: tuple[int, ...]) -> str:
            return "x".join(map(str, (*s[1:], s[0]))) if len(s) == 3 else "x".join(map(str, s))

        text = f"{self.op}-input:{shape(self.input)}-output:{shape(self.output)}"
        if self.op == "mbconv":
            text += f"-expand:{self.expand}-kernel:{self.kernel}-stride:{self.stride}-idskip:{int(self.skip)}"
        elif self.op == "stem":
            text += f"-kernel:{self.kernel}-stride:{self.stride}"
        return text


@dataclass(frozen=True)
class Entry:
    """One measured op. ``median_ms``/``min_ms`` are None where the source did not report them (the mobile table)."""

    key: OpKey
    batch: int
    mean_ms: float
    median_ms: float | None
    std_ms: float
    count: int
    min_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        k = asdict(self.key)
        k["input"], k["output"] = list(self.key.input), list(self.key.output)
        stats = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "key"}
        return {**k, **stats}

    @classmethod
    def from_dict(cls, d: Any) -> Entry:
        """An entry of a table file, every field checked: shapes and counts are bounded integers, latencies are
        finite and within [0, ``MAX_MS``] (a NaN or infinity would silently drop an op from a search)."""
        if not isinstance(d, dict):
            raise LatencyError(f"an entry must be a JSON object, got {_short(d)}")
        try:
            key = OpKey(
                op=d["op"],
                input=_shape(d["input"], "input"),
                output=_shape(d["output"], "output"),
                kernel=count(d.get("kernel", 0), "kernel", 0, MAX_SIZE),
                expand=count(d.get("expand", 0), "expand", 0, MAX_SIZE),
                stride=count(d.get("stride", 1), "stride", 1, MAX_SIZE),
                skip=_flag(d.get("skip", False)),
            )
            ms = {name: _ms(d.get(name), name) for name in ("median_ms", "min_ms")}
            return cls(
                key,
                count(d["batch"], "batch", 1, MAX_SIZE),
                _ms(d["mean_ms"], "mean_ms"),
                ms["median_ms"],
                _ms(d["std_ms"], "std_ms"),
                count(d["count"], "count", 0, 2**62),
                ms["min_ms"],
            )
        except KeyError as e:
            raise LatencyError(f"entry {_short(d)} lacks {e}") from None
        except (InputError, TypeError) as e:
            raise LatencyError(f"entry {_short(d)}: {e}") from None


def _short(value: Any) -> str:
    """A value as an error line shows it: a tampered entry may be huge."""
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) not in (1, 3):
        raise InputError(f"{name} must be a list of C or C, H, W, got {value!r}")
    return tuple(count(v, name, 1, MAX_SIZE) for v in value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"skip must be true or false, got {value!r}")
    return value


def _ms(value: Any, name: str) -> float | None:
    """A latency field: None (not reported) or a finite number of ms in [0, ``MAX_MS``]."""
    return None if value is None else number(value, name, 0.0, MAX_MS)


@dataclass(frozen=True)
class Header:
    """Where and how a table was measured. ``clock``: what timed it (``runtimes.CLOCKS``); ``statistic``: the entry
    field lookups (and validation) use, one of ``STATISTICS``; ``calibration``: the fitted per-network overhead and
    the archs it was fitted on."""

    space: str
    space_config: dict[str, Any]
    device: str
    device_kind: str
    runtime: str
    runtime_version: str
    threads: int
    batch: int
    date: str
    clock: str = "wall"
    statistic: str = "median"
    source: str = "measured with proxyless search profile"
    calibration: dict[str, Any] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def _header(raw: Any) -> Header:
    """The checked header of a table file: the fields ``Header`` declares, of the right kinds and in range."""
    if not isinstance(raw, dict):
        raise LatencyError(f"no 'header' object (got {_short(raw)}); a table starts with where it was measured")
    try:
        header = Header(**raw)
    except TypeError as e:
        raise LatencyError(f"bad LUT header: {e}") from None
    for name in ("space", "device", "device_kind", "runtime", "runtime_version", "date", "clock", "source"):
        if not isinstance(getattr(header, name), str):
            raise LatencyError(f"bad LUT header: {name} must be a string, got {_short(getattr(header, name))}")
    if not isinstance(header.space_config, dict) or not isinstance(header.notes, dict):
        raise LatencyError("bad LUT header: space_config and notes must be objects")
    if header.statistic not in STATISTICS:
        raise LatencyError(f"bad LUT header: statistic must be one of {STATISTICS}, got {header.statistic!r}")
    try:
        count(header.threads, "threads", 1, MAX_SIZE)
        count(header.batch, "batch", 1, MAX_SIZE)
        _calibration(header.calibration)
    except InputError as e:
        raise LatencyError(f"bad LUT header: {e}") from None
    return header


def _calibration(calibration: Any) -> None:
    """A calibration is None or an object whose overhead is a finite number of ms (negative allowed: a table's
    ops, timed alone, can cost more than within a network)."""
    if calibration is None:
        return
    if not isinstance(calibration, dict):
        raise InputError(f"calibration must be an object, got {_short(calibration)}")
    number(calibration.get("overhead_ms", 0.0), "calibration.overhead_ms", -MAX_MS, MAX_MS)


@dataclass
class Lut:
    header: Header
    entries: dict[OpKey, Entry] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        if entry.batch != self.header.batch:
            raise LatencyError(f"entry {entry.key} has batch {entry.batch}, table has batch {self.header.batch}")
        self.entries[entry.key] = entry

    def ms(self, key: OpKey, where: str = "") -> float:
        """The table's latency for ``key``; a missing entry is an error naming it (and the table)."""
        entry = self.entries.get(key)
        if entry is None:
            raise LatencyError(f"{where}LUT has no entry {key}")
        value = getattr(entry, f"{self.header.statistic}_ms")
        if value is None:
            raise LatencyError(f"{where}LUT entry {key} has no {self.header.statistic}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "header": asdict(self.header),
            "entries": [e.to_dict() for e in self.entries.values()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lut:
        if d.get("format") != FORMAT:
            raise LatencyError(f"not a {FORMAT} latency table (format={_short(d.get('format'))})")
        lut = cls(_header(d.get("header")))
        entries = d.get("entries", [])
        if not isinstance(entries, list):
            raise LatencyError(f"'entries' must be a list, got {type(entries).__name__}")
        for raw in entries:
            lut.add(Entry.from_dict(raw))
        return lut

    def save(self, path: str | Path) -> None:
        """Atomic: a profile interrupted mid-write leaves the previous complete file; strict JSON."""
        atomic_write(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Lut:
        """A table file through the guarded reader; any fault is one line naming the file."""
        path = Path(path)
        if not os.path.lexists(path):
            raise LatencyError(f"no latency table at {path}")
        try:
            return cls.from_dict(read_json(path, f"a {FORMAT} latency table"))
        except InputError as e:  # the reader's line names the file already
            raise LatencyError(str(e)) from None
        except LatencyError as e:
            raise LatencyError(f"{path}: {e}") from None

    def check_space(self, space: SearchSpace, where: str = "LUT") -> None:
        """Refuse a table measured for another search space (or another definition of one of the same name)."""
        if self.header.space != space.name:
            raise LatencyError(f"{where} is a table of search space {self.header.space!r}, not {space.name!r}")
        if self.header.space_config != space_config(space):
            raise LatencyError(f"{where} was measured for another definition of search space {space.name!r}")

    def with_header(self, **changes: Any) -> Lut:
        return Lut(replace(self.header, **changes), dict(self.entries))
