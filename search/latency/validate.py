"""Does a table predict whole networks? Measure random archs of its space end to end and compare.

The prediction is the calibrated sum: table entries plus one per-network overhead (call overheads counted once
per op in the sum but once per network in reality, cache effects between ops). The overhead is fitted when the
table is profiled, on archs sampled with a seed of their own and stored in the header; validation samples other
archs and skips any calibration arch, so the figures are out-of-sample.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from search.latency.lut import LatencyError, Lut
from search.latency.plots import scatter
from search.latency.predict import TableModel
from search.latency.runtimes import Runner, Stats, make_runner, measure
from search.space import SearchSpace, get_space
from zoo.arch import ArchSpec
from zoo.files import atomic_write
from zoo.network import ProxylessNet

CALIBRATION_SEED = 1000


def signature(space: SearchSpace, arch: ArchSpec) -> str:
    """The arch's candidate index per layer, e.g. ``'0362...'``: a compact identity to store and compare."""
    return "".join(
        str(space.candidates(layer).index(b)) for layer, b in zip(space.layers(), space.choices_of(arch), strict=True)
    )


def sample_archs(space: SearchSpace, n: int, seed: int, exclude: set[str] | None = None) -> list[ArchSpec]:
    """``n`` distinct random archs of ``space``, none of whose signatures is in ``exclude``."""
    rng, seen, out = random.Random(seed), set(exclude or ()), []
    while len(out) < n:
        arch = space.sample(rng, name=f"{space.name}-seed{seed}-{len(out)}")
        sig = signature(space, arch)
        if sig not in seen:
            seen.add(sig)
            out.append(arch)
    return out


def measure_networks(
    runner: Runner, archs: list[ArchSpec], budget_s: float, rounds: int = 5, progress: bool = True
) -> list[Stats]:
    """End-to-end timings, interleaved: ``rounds`` passes over all archs, each taking a slice of the budget.

    Interleaving spreads any burst of load from other processes over all archs instead of biasing a few.
    """
    prepared, per_run = [], []
    for arch in tqdm(archs, desc="prepare networks", disable=not progress):
        timed = runner.prepare(ProxylessNet(arch), (arch.in_chans, arch.input_size, arch.input_size))
        per_run.append(measure(timed, budget_s=0.0, min_repeats=3).median_ms / 1e3)  # warm-up + time estimate
        prepared.append(timed)
    samples: list[list[np.ndarray]] = [[] for _ in archs]
    bar = tqdm(total=rounds * len(archs), desc="measure networks", disable=not progress)
    for _ in range(rounds):
        for i, timed in enumerate(prepared):
            samples[i].append(timed(max(3, int(budget_s / rounds / per_run[i]))))
            bar.update()
    bar.close()
    return [Stats.of(np.concatenate(s)) for s in samples]


def calibrate(
    lut: Lut,
    space: SearchSpace,
    runner: Runner,
    n: int,
    budget_s: float,
    seed: int = CALIBRATION_SEED,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit the per-network overhead: median over ``n`` archs of (measured - table sum), in the table's statistic."""
    plain = TableModel(lut.with_header(calibration=None), "calibration")
    archs = sample_archs(space, n, seed)
    stats = measure_networks(runner, archs, budget_s, progress=progress)
    measured = np.array([s.get(lut.header.statistic) for s in stats])
    sums = np.array([plain.predict_arch(a).total_ms for a in archs])
    return {
        "method": "overhead_ms = median(measured - table sum) over n archs sampled with seed",
        "overhead_ms": round(float(np.median(measured - sums)), 4),
        "n": n,
        "seed": seed,
        "archs": [signature(space, a) for a in archs],
        "measured_ms": [round(float(v), 4) for v in measured],
        "sum_ms": [round(float(v), 4) for v in sums],
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their mean rank (Spearman's definition; archs can tie in a table's sum)."""
    x = np.asarray(x)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return (first + (counts - 1) / 2)[inverse].astype(np.float64)


def metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    spearman = float(np.corrcoef(_ranks(predicted), _ranks(measured))[0, 1]) if len(measured) > 1 else float("nan")
    return {
        "mape": round(float(np.mean(np.abs(predicted - measured) / measured)), 4),
        "spearman": round(spearman, 4),
        "rmse_ms": round(float(np.sqrt(np.mean((predicted - measured) ** 2))), 4),
    }


def validate(
    lut_path: str | Path,
    n: int,
    seed: int,
    budget_s: float,
    rounds: int,
    png: str | Path | None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure ``n`` random archs with the table's runtime/device/batch/threads; figures of the calibrated sum."""
    lut = Lut.load(lut_path)
    h = lut.header
    space = get_space(h.space)
    lut.check_space(space, where=str(lut_path))
    if h.device_kind not in ("cpu", "cuda"):
        raise LatencyError(f"{lut_path} was measured on {h.device} ({h.runtime}); this machine cannot run that")
    model = TableModel(lut, str(lut_path))
    calibration = h.calibration or {}
    with make_runner(h.runtime, h.device_kind, h.threads, h.batch, h.clock) as runner:
        if runner.device_name != h.device:
            print(f"warning: {lut_path} was measured on {h.device}, this is {runner.device_name}", file=sys.stderr)
        archs = sample_archs(space, n, seed, exclude=set(calibration.get("archs", [])))
        stats = measure_networks(runner, archs, budget_s, rounds, progress)
    measured = np.array([s.get(h.statistic) for s in stats])
    predicted = np.array([model.predict_arch(a).total_ms for a in archs])
    raw = predicted - model.overhead
    result: dict[str, Any] = {"n": n, **metrics(predicted, measured)}
    result["mape_uncalibrated"] = metrics(raw, measured)["mape"]
    result["overhead_ms"] = model.overhead
    result["prediction"] = (
        f"table sum + overhead fitted on {calibration['n']} other archs (seed {calibration['seed']})"
        if calibration
        else "table sum (uncalibrated)"
    )
    result.update(
        space=h.space,
        device=h.device,
        runtime=h.runtime,
        batch=h.batch,
        threads=h.threads,
        clock=h.clock,
        statistic=h.statistic,
        seed=seed,
    )
    if png:
        png = Path(png)
        title = (
            f"{h.space} / {h.runtime} {h.device_kind} b{h.batch} t{h.threads}: n={n} "
            f"MAPE {result['mape']:.1%} Spearman {result['spearman']:.3f}\n"
            f"{h.device}; {h.statistic} of {h.clock} timings"
        )
        series = {"table sum + calibrated overhead": predicted, "table sum": raw}
        scatter(png, measured, series, title, "measured end to end (ms)", "predicted (ms)")
        details = {**result, "archs": [signature(space, a) for a in archs]}
        details.update(measured_ms=measured.round(4).tolist(), predicted_ms=predicted.round(4).tolist())
        _write_text(png.with_suffix(".json"), json.dumps(details, indent=1, allow_nan=False) + "\n")
        result["png"] = str(png)
    return result


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text)
