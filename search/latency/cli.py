"""Latency subcommands of ``proxyless search``: profile, latency, validate-lut, mobile-table, mobile-loo."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from search.latency.lut import STATISTICS, LatencyError, Lut
from search.latency.mobile import FEATURES, convert_mobile_table, leave_one_out
from search.latency.predict import MOBILE_TABLE, TARGETS, load_latency_model
from search.latency.runtimes import CLOCKS
from search.space import SPACES, SearchSpace, get_space
from zoo.arch import ArchSpec
from zoo.inputs import MAX_JSON_BYTES, count, number, read_text
from zoo.options import add_options, from_args, option
from zoo.runtimes import runtime_names
from zoo.runtimes.base import DEVICES


@dataclass(frozen=True)
class Bound:
    """The range of a numeric option, checked before any runner is built or any op timed."""

    option: str
    low: float
    high: float
    integer: bool = True


PROFILE_LIMITS = (
    Bound("batch", 1, 4096),
    Bound("threads", 1, 1024),
    Bound("budget_s", 0, 3600, integer=False),
    Bound("warmup_s", 0, 3600, integer=False),
    Bound("calib_archs", 0, 10_000),
    Bound("calib_budget_s", 0, 3600, integer=False),
)
VALIDATE_LIMITS = (
    Bound("archs", 2, 10_000),  # Spearman needs two
    Bound("budget_s", 0, 3600, integer=False),
    Bound("rounds", 1, 1000),
)


def _check_sizes(args: ProfileOptions | ValidateOptions, bounds: tuple[Bound, ...]) -> None:
    """One-line refusal of an option out of range (``--archs 100000000``, ``--budget-s inf``)."""
    for b in bounds:
        value, name = getattr(args, b.option), "--" + b.option.replace("_", "-")
        if b.integer:
            count(value, name, int(b.low), int(b.high))
        else:
            number(value, name, b.low, b.high)


@dataclass(frozen=True, kw_only=True)  # required options among optional ones, in --help's order
class ProfileOptions:
    """``proxyless search profile``."""

    space: str = option(MISSING, "search space whose candidate ops are timed", choices=lambda: sorted(SPACES))
    device: str = option("cpu", "where the ops run", choices=DEVICES)
    runtime: str = option("onnxruntime", "from the runtime registry", choices=runtime_names)
    batch: int = option(1, "batch size")
    threads: int = option(1, "intra-op threads")
    clock: str = option("auto", "auto: thread CPU time on cpu with 1 thread, else wall / CUDA events", choices=CLOCKS)
    out: Path = option(MISSING, "table JSON; entries already there are kept (resume)")
    statistic: str = option(
        "min",
        "what lookups and validation use (default min: robust to other processes on a shared machine)",
        choices=STATISTICS,
    )
    budget_s: float = option(2.0, "timing budget per op after warm-up")
    warmup_s: float = option(0.3, "warm-up per op")
    calib_archs: int = option(10, "archs to fit the per-network overhead on (0: none)")
    calib_budget_s: float = option(4.0, "timing budget per calibration arch")
    recalibrate: bool = option(False, "refit the overhead even if the table has one", switch=True)
    no_progress: bool = option(False, "no progress bars on stderr", switch=True)


@dataclass(frozen=True)
class LatencyOptions:
    """``proxyless search latency``."""

    arch: str = option(MISSING, "arch JSON file or zoo model name", positional=True)
    lut: str = option(MISSING, f"LUT file or one of {', '.join(TARGETS)}")
    space: str | None = option(None, "space of a named target (default: from the arch)", choices=lambda: sorted(SPACES))
    json: bool = option(False, "end with one JSON line", switch=True)


@dataclass(frozen=True)
class ValidateOptions:
    """``proxyless search validate-lut``."""

    lut: Path = option(MISSING, "the table to check")
    archs: int = option(20, "random archs measured end to end")
    seed: int = option(0, "seed of the random archs")
    budget_s: float = option(4.0, "timing budget per arch")
    rounds: int = option(5, "interleaved passes over the archs")
    png: Path | None = option(None, "scatter plot (default: next to the table, .validate.png)")
    json: bool = option(False, "end with one JSON line of the figures", switch=True)
    no_progress: bool = option(False, "no progress bars on stderr", switch=True)


@dataclass(frozen=True)
class MobileTableOptions:
    """``proxyless search mobile-table``."""

    yaml: Path = option(MISSING, "the authors' mobile_trim.yaml", positional=True)
    out: Path = option(MOBILE_TABLE, "where the converted table goes")


@dataclass(frozen=True)
class MobileLooOptions:
    """``proxyless search mobile-loo``."""

    table: Path = option(MOBILE_TABLE, "the Pixel-1 table")
    png: Path | None = option(None, "LOO predicted-vs-published scatter plot")
    json: bool = option(False, "end with one JSON line of the figures", switch=True)


def _run_profile(args: ProfileOptions) -> int:
    from search.latency.profile import profile_ops
    from search.latency.runtimes import make_runner
    from search.latency.validate import calibrate

    _check_sizes(args, PROFILE_LIMITS)
    space, progress = get_space(args.space), not args.no_progress
    before = len(Lut.load(args.out).entries) if os.path.lexists(args.out) else 0  # refused before a runner is built
    with make_runner(args.runtime, args.device, args.threads, args.batch, args.clock) as runner:
        lut = profile_ops(space, runner, args.out, args.budget_s, args.warmup_s, args.statistic, progress)
        if args.calib_archs > 0 and (lut.header.calibration is None or args.recalibrate):
            cal = calibrate(lut, space, runner, args.calib_archs, args.calib_budget_s, progress=progress)
            lut = lut.with_header(calibration=cal)
            lut.save(args.out)
    overhead = (lut.header.calibration or {}).get("overhead_ms")
    summary = {"out": str(args.out), "entries": len(lut.entries), "new": len(lut.entries) - before}
    print(json.dumps({**summary, "device": lut.header.device, "overhead_ms": overhead}))
    return 0


def _load_arch(text: str) -> ArchSpec:
    path = Path(text)
    if os.path.lexists(path):  # any file, a FIFO or a device too: the guarded reader refuses those by name
        return ArchSpec.from_json(read_text(path, "an arch JSON file", MAX_JSON_BYTES))
    from zoo.registry import get_model_info

    arch = get_model_info(text).arch
    if not isinstance(arch, ArchSpec):
        raise LatencyError(f"{text} is not an MBConv network; latency tables price MBConv archs only")
    return arch


def _space_for(args: LatencyOptions, arch: ArchSpec) -> SearchSpace:
    """``--space``, else the space whose input the arch takes: a table of another space is then refused by its
    space check (as ``specialize`` refuses it), not by the first entry it lacks."""
    if args.space:
        return get_space(args.space)
    for space in SPACES.values():
        if (space.in_chans, space.input_size) == (arch.in_chans, arch.input_size):
            return space
    if args.lut not in TARGETS:  # a table of a space not listed here (a test's): its own space
        return get_space(Lut.load(args.lut).header.space)
    raise LatencyError(f"no search space takes {arch.name}'s {arch.in_chans}x{arch.input_size}px input; give --space")


def _run_latency(args: LatencyOptions) -> int:
    arch = _load_arch(args.arch)
    model = load_latency_model(args.lut, _space_for(args, arch))
    b = model.predict_arch(arch)
    unit = b.unit
    print(f"{arch.name} on {b.model}")
    for i, (name, value) in enumerate(b.layers):
        print(f"  block {i:>2}  {name:<22} {value:9.3f} {unit}")
    for name, value in b.fixed:
        print(f"  {name:<31} {value:9.3f} {unit}")
    print(f"  {'total':<31} {b.total_ms:9.3f} {unit}")
    if b.predicted_ops:
        print(f"  ({b.predicted_ops} ops not in the table, priced by the fitted predictor)")
    if args.json:
        out: dict[str, Any] = {"arch": arch.name, "model": b.model, "unit": unit, "total": round(b.total_ms, 4)}
        out["predicted_ops"] = b.predicted_ops
        print(json.dumps(out))
    return 0


def _run_validate(args: ValidateOptions) -> int:
    from search.latency.validate import validate

    _check_sizes(args, VALIDATE_LIMITS)

    png = args.png or args.lut.with_suffix(".validate.png")
    result = validate(args.lut, args.archs, args.seed, args.budget_s, args.rounds, png, not args.no_progress)
    print(
        f"{result['n']} archs of {result['space']} on {result['device']} ({result['runtime']}): "
        f"MAPE {result['mape']:.2%} (uncalibrated {result['mape_uncalibrated']:.2%}), "
        f"Spearman {result['spearman']:.3f}, RMSE {result['rmse_ms']:.3f} ms; {result['prediction']}; plot {png}"
    )
    if args.json:
        print(json.dumps(result))
    return 0


def _run_mobile_table(args: MobileTableOptions) -> int:
    lut = convert_mobile_table(args.yaml)
    lut.save(args.out)
    print(f"wrote {args.out}: {sum(e.count > 0 for e in lut.entries.values())} published entries + zero ops")
    return 0


def _run_mobile_loo(args: MobileLooOptions) -> int:
    from search.latency.plots import scatter
    from search.latency.predict import MobileModel

    lut = Lut.load(args.table)
    report = leave_one_out(lut)
    model = MobileModel(lut)
    summary: dict[str, Any] = report.summary()
    summary["coef_ms_per_unit"] = {f: round(c, 5) for f, c in zip(FEATURES, model.predictor.coef, strict=True)}
    summary["proxyless_mobile_ms"] = round(model.predict_arch(_load_arch("proxyless_mobile")).total_ms, 2)
    if args.png:
        title = f"Pixel 1 per-op predictor, leave-one-out over {summary['n']} entries: MAPE {summary['loo_mape']:.1%}"
        scatter(
            args.png, report.measured, {"LOO prediction": report.predicted}, title, "published (ms)", "predicted (ms)"
        )
    print(
        f"Pixel-1 predictor, leave-one-out over {summary['n']} published entries: MAPE {summary['loo_mape']:.2%} "
        f"(median {summary['loo_median_ape']:.2%}, max {summary['loo_max_ape']:.2%}); "
        f"proxyless_mobile predicted {summary['proxyless_mobile_ms']} ms (paper: 78 ms)"
    )
    if args.json:
        print(json.dumps(summary))
    return 0


COMMANDS: tuple[tuple[str, str, type, Callable[[Any], int]], ...] = (
    ("profile", "time every candidate op of a search space into a latency table", ProfileOptions, _run_profile),
    ("latency", "an arch's predicted latency, layer by layer", LatencyOptions, _run_latency),
    (
        "validate-lut",
        "measure random archs end to end against a table's prediction",
        ValidateOptions,
        _run_validate,
    ),
    (
        "mobile-table",
        "convert the authors' Pixel-1 mobile_trim.yaml to our format",
        MobileTableOptions,
        _run_mobile_table,
    ),
    ("mobile-loo", "leave-one-out error of the Pixel-1 predictor on the table", MobileLooOptions, _run_mobile_loo),
)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    for name, help, options, run in COMMANDS:
        p = subparsers.add_parser(name, help=help)
        add_options(p, options)
        p.set_defaults(func=lambda args, options=options, run=run: run(from_args(options, args)))
