"""Build a latency table on this machine: time every op of a search space in isolation, resumably.

Entries already in the output file are kept (after checking it was measured the same way on the same device);
the file is rewritten atomically after each new entry, so an interrupted profile loses at most one op.
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from search.latency.lut import Entry, Header, LatencyError, Lut, OpKey, space_config
from search.latency.ops import build_op, is_timed, space_ops
from search.latency.runtimes import Runner, measure
from search.space import SearchSpace


def new_header(space: SearchSpace, runner: Runner, statistic: str, notes: dict[str, Any]) -> Header:
    return Header(
        space=space.name,
        space_config=space_config(space),
        device=runner.device_name,
        device_kind=runner.device_kind,
        runtime=runner.runtime,
        runtime_version=runner.version,
        threads=runner.threads,
        batch=runner.batch,
        clock=runner.clock,
        statistic=statistic,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        notes={"torch": torch.__version__, "python": platform.python_version(), **notes},
    )


def _check_resumable(old: Header, new: Header, path: Path) -> None:
    """A table resumes only where it was measured the same way: same space, device, runtime and how it was built."""
    if old.notes.get("build") != new.notes.get("build"):
        raise LatencyError(
            f"{path} was built with {old.notes.get('build')!r}, this profile builds {new.notes.get('build')!r}; "
            "use another --out to start a new table"
        )
    for name in (
        "space",
        "space_config",
        "device",
        "device_kind",
        "runtime",
        "runtime_version",
        "threads",
        "batch",
        "clock",
        "statistic",
    ):
        if getattr(old, name) != getattr(new, name):
            raise LatencyError(
                f"{path} holds a table with {name}={getattr(old, name)!r}, this profile has {getattr(new, name)!r}; "
                "use another --out to start a new table"
            )


def start_or_resume(space: SearchSpace, runner: Runner, out: Path, statistic: str, notes: dict[str, Any]) -> Lut:
    header = new_header(space, runner, statistic, notes)
    if not out.exists():
        return Lut(header)
    lut = Lut.load(out)
    _check_resumable(lut.header, header, out)
    return lut


def profile_ops(
    space: SearchSpace,
    runner: Runner,
    out: str | Path,
    budget_s: float,
    warmup_s: float = 0.2,
    statistic: str = "median",
    progress: bool = True,
    after_entry: Callable[[Entry], None] | None = None,
) -> Lut:
    """Time each op of ``space`` not yet in ``out`` and save after each; returns the (possibly resumed) table."""
    out = Path(out)
    notes: dict[str, Any] = {"budget_s_per_op": budget_s, "warmup_s": warmup_s, "build": runner.build_notes()}
    lut = start_or_resume(space, runner, out, statistic, notes)
    todo: list[OpKey] = [k for k in space_ops(space) if k not in lut.entries]
    bar = tqdm(todo, desc=f"profile {space.name} {runner.runtime}/{runner.device_kind}", disable=not progress)
    for key in bar:
        if is_timed(key):
            stats = measure(runner.prepare(build_op(key), key.input), budget_s, warmup_s)
            entry = Entry(key, runner.batch, stats.mean_ms, stats.median_ms, stats.std_ms, stats.count, stats.min_ms)
            bar.set_postfix_str(f"{key.op} {stats.get(statistic):.3f} ms")
        else:
            entry = Entry(key, runner.batch, 0.0, 0.0, 0.0, 0, 0.0)
        lut.add(entry)
        lut.save(out)
        if after_entry is not None:
            after_entry(entry)
    return lut
