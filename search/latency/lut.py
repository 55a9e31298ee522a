"""Latency lookup table (LUT) file format ``proxyless-lut/1``: one JSON file per space, device, runtime and batch.

A table is a header (where and how it was measured, and of which search space) plus one entry per distinct op
shape: the op and its parameters, input/output shapes (C, H, W per sample, or C for vectors), the batch size and
the measured mean/median/std (and min) in ms with the sample count. Layers with equal shapes share one entry, as in the
authors' mobile table. The ``zero`` op is stored with 0 ms and count 0: the network skips that layer, nothing runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from search.space import SearchSpace
from zoo.files import atomic_write

FORMAT = "proxyless-lut/1"
OPS = ("stem", "mbconv", "zero", "feature_mix", "classifier")
STATISTICS = ("median", "min", "mean")


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
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        try:
            key = OpKey(
                op=d["op"],
                input=tuple(int(v) for v in d["input"]),
                output=tuple(int(v) for v in d["output"]),
                kernel=int(d.get("kernel", 0)),
                expand=int(d.get("expand", 0)),
                stride=int(d.get("stride", 1)),
                skip=bool(d.get("skip", False)),
            )
            median, low = d["median_ms"], d.get("min_ms")
            return cls(
                key,
                int(d["batch"]),
                float(d["mean_ms"]),
                None if median is None else float(median),
                float(d["std_ms"]),
                int(d["count"]),
                None if low is None else float(low),
            )
        except (KeyError, TypeError) as e:
            raise LatencyError(f"bad LUT entry {d!r}: {e}") from None


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
            raise LatencyError(f"not a {FORMAT} latency table (format={d.get('format')!r})")
        try:
            header = Header(**d["header"])
        except TypeError as e:
            raise LatencyError(f"bad LUT header: {e}") from None
        if header.statistic not in STATISTICS:
            raise LatencyError(f"bad LUT header: statistic must be one of {STATISTICS}, got {header.statistic!r}")
        lut = cls(header)
        for raw in d.get("entries", []):
            lut.add(Entry.from_dict(raw))
        return lut

    def save(self, path: str | Path) -> None:
        """Atomic: a profile interrupted mid-write leaves the previous complete file."""
        atomic_write(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Lut:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LatencyError(f"no latency table at {path}") from None
        except json.JSONDecodeError as e:
            raise LatencyError(f"{path} is not JSON: {e}") from None
        return cls.from_dict(data)

    def check_space(self, space: SearchSpace, where: str = "LUT") -> None:
        """Refuse a table measured for another search space (or another definition of one of the same name)."""
        if self.header.space != space.name:
            raise LatencyError(f"{where} is a table of search space {self.header.space!r}, not {space.name!r}")
        if self.header.space_config != space_config(space):
            raise LatencyError(f"{where} was measured for another definition of search space {space.name!r}")

    def with_header(self, **changes: Any) -> Lut:
        return Lut(replace(self.header, **changes), dict(self.entries))
