"""Latency of each runtime at each batch size, measured fairly in one process.

Every runtime gets the same thread count. After ``warmup`` untimed calls each, the timed calls are split into
``rounds`` short runs that alternate between runtimes (rotating the order every round), so background load on a
shared machine falls on all of them alike. A call is numpy in -> numpy out, as an application sees it; on CUDA,
PyTorch runtimes are also timed with the input already on the GPU, by CUDA events (``gpu_p50_ms``: no host
copies, launch overhead included). Peak memory (``peak_mem_kind`` says which) is PyTorch's CUDA
``max_memory_allocated`` (weights + activations) for PyTorch runtimes on the GPU, else the RSS high-water mark
above the RSS before the run (reset through /proc/self/clear_refs; Linux). ORT-CUDA and TensorRT allocate GPU
memory outside PyTorch: not measured.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from export.files import ExportError, file_bytes
from export.source import Source
from zoo.files import output_folder
from zoo.options import option
from zoo.runtimes import (
    BuildOptions,
    Session,
    available_runtimes,
    default_bench_runtimes,
    make_session,
    runtime_names,
)
from zoo.runtimes.base import DEVICES
from zoo.runtimes.onnx import EXPORTERS
from zoo.runtimes.sessions import TorchSession

REPORT_FORMAT = "proxyless-bench/1"


@dataclass
class BenchOptions:
    """What ``export bench`` measures and how; every field is one of its options."""

    runtimes: tuple[str, ...] = option(
        default_bench_runtimes(), "comma-separated runtimes of the registry (`proxyless export runtimes` lists them)"
    )
    batches: tuple[int, ...] = option((1, 8, 32), "comma-separated batch sizes")
    device: str = option("cpu", "device", choices=DEVICES)
    threads: int = option(1, "threads for every runtime (1: stable on a shared machine)")
    warmup: int = option(10, "untimed calls per runtime and batch")
    iters: int = option(60, "timed calls per runtime and batch")
    rounds: int = option(6, "interleaved rounds the calls are split into")
    onnx_exporter: str = option("dynamo", "ONNX exporter", choices=EXPORTERS)

    def __post_init__(self) -> None:
        known = runtime_names()
        bad = [k for k in self.runtimes if k not in known]
        if bad or not self.runtimes:
            raise ExportError(f"unknown runtime(s) {', '.join(bad) or '(none)'}; choose from {', '.join(known)}")
        if not self.batches or min(self.batches) < 1:
            raise ExportError(f"batch sizes must be >= 1, got {list(self.batches)}")
        if self.threads < 1 or self.warmup < 0 or self.rounds < 1 or self.iters < self.rounds:
            raise ExportError("need threads >= 1, warmup >= 0, rounds >= 1 and iters >= rounds")

    @property
    def memory(self) -> str:
        rss = "rss: RSS high-water mark above the RSS before the runtime's warm-up or timed run (VmHWM - VmRSS)"
        if self.device == "cuda":
            return f"cuda: PyTorch max_memory_allocated (PyTorch runtimes on the GPU); {rss}; ORT-CUDA/TensorRT: none"
        return rss


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class _Meter:
    """Peak memory of a run of calls: RSS high-water delta on the CPU, PyTorch's allocator on CUDA."""

    def __init__(self, runtime: Session, device: str) -> None:
        self.cuda = device == "cuda" and runtime.device == "cuda"
        self.measurable = isinstance(runtime, TorchSession) if self.cuda else True
        self.peak_mb: float | None = None
        self.kind = ("cuda" if self.cuda else "rss") if self.measurable else None

    def __enter__(self) -> _Meter:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._base = _status_kb("VmRSS")
            self.measurable = self._base is not None and _reset_rss_peak()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.measurable:
            return
        if self.cuda:
            mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            hwm = _status_kb("VmHWM")
            mb = (hwm - self._base) / 1024 if hwm is not None else None
        if mb is not None:
            self.peak_mb = mb if self.peak_mb is None else max(self.peak_mb, mb)


@dataclass(frozen=True)
class LatencyRecord:
    """One (model, runtime, batch) measurement; ``asdict`` is its one JSON form (the report's ``results`` rows)."""

    model: str
    runtime: str
    provider: str
    device: str
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    calls: int
    throughput_ips: float
    file_bytes: int | None
    peak_mem_mb: float | None
    peak_mem_kind: str | None
    gpu_p50_ms: float | None
    note: str


def _stats(ms: list[float]) -> dict[str, Any]:
    a = np.asarray(ms)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "std_ms": float(a.std()),
        "calls": len(a),
    }


def _gpu_ms(runtime: TorchSession, x: np.ndarray, n: int) -> float:
    """Median GPU time of ``runtime`` on a GPU-resident input, from CUDA events."""
    xd = torch.from_numpy(x).cuda()
    times = []
    for _ in range(n):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        runtime.run_tensor(xd)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def _model_bytes(source: Source) -> int:
    return sum(t.numel() * t.element_size() for t in source.model.state_dict().values())


def build_runtimes(
    source: Source, opts: BenchOptions, workdir: Path, log: Any = print
) -> tuple[dict[str, Session], dict[str, str]]:
    """The runtimes of ``opts`` that work here (built into ``workdir``, reused when present), and the reasons
    for those that do not."""
    status = available_runtimes(opts.device)
    build = BuildOptions(batch_max=max(BuildOptions().batch_max, *opts.batches), onnx_exporter=opts.onnx_exporter)
    runtimes, missing = {}, {}
    for kind in opts.runtimes:
        if status[kind]:
            missing[kind] = status[kind]
            log(f"{kind}: skipped: {status[kind]}")
            continue
        shape, device = source.input_shape, opts.device
        runtimes[kind] = make_session(kind, source.model, shape, workdir, device, opts.threads, options=build)
    return runtimes, missing


def measure(
    source: Source, runtimes: dict[str, Session], opts: BenchOptions, progress: bool = True
) -> list[LatencyRecord]:
    """One result row per (runtime, batch)."""
    torch.set_num_threads(opts.threads)
    names = list(runtimes)
    per_round = opts.iters // opts.rounds  # the first iters % rounds rounds time one call more: iters in all
    rows = []
    bar = tqdm(total=len(opts.batches) * opts.rounds * len(names), desc=f"bench {source.name}", disable=not progress)
    for batch in opts.batches:
        x = np.random.default_rng(0).standard_normal((batch, *source.input_shape), dtype=np.float32)
        meters = {n: _Meter(runtimes[n], opts.device) for n in names}
        for name in names:  # warm-up inside the meter: first calls at a new batch size allocate what they need
            with meters[name]:
                for _ in range(opts.warmup):
                    runtimes[name](x)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(opts.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                run = runtimes[name]
                with meters[name]:
                    for _ in range(per_round + (r < opts.iters % opts.rounds)):
                        t0 = time.perf_counter()
                        run(x)
                        times[name].append((time.perf_counter() - t0) * 1e3)
                bar.update()
        for name in names:
            rt, meter, stats = runtimes[name], meters[name], _stats(times[name])
            on_gpu = rt.device == "cuda" and isinstance(rt, TorchSession)
            row = LatencyRecord(
                model=source.name,
                runtime=name,
                provider=rt.provider,
                device=rt.device,
                batch=batch,
                **stats,
                throughput_ips=batch * 1e3 / stats["mean_ms"],
                file_bytes=_model_bytes(source) if name == "torch" else file_bytes(rt.path),
                peak_mem_mb=meter.peak_mb,
                peak_mem_kind=meter.kind if meter.peak_mb is not None else None,
                gpu_p50_ms=_gpu_ms(rt, x, per_round) if on_gpu else None,
                note=rt.note,
            )
            rows.append(row)
    bar.close()
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and batch: eager PyTorch's p50, the fastest other runtime and the ratio."""
    out = []
    for model, batch in dict.fromkeys((r["model"], r["batch"]) for r in rows):
        group = [r for r in rows if r["model"] == model and r["batch"] == batch]
        eager = next((r for r in group if r["runtime"] == "torch"), None)
        others = [r for r in group if r["runtime"] != "torch"]
        if eager is None or not others:
            continue
        best = min(others, key=lambda r: r["p50_ms"])
        out.append(
            {
                "model": model,
                "batch": batch,
                "eager_ms": round(eager["p50_ms"], 3),
                "best_runtime": best["runtime"],
                "best_ms": round(best["p50_ms"], 3),
                "speedup": round(eager["p50_ms"] / best["p50_ms"], 2),
            }
        )
    return out


def run_bench(
    sources: list[Source], opts: BenchOptions, out: Path, progress: bool = True, log: Any = print, force: bool = False
) -> dict[str, Any]:
    """Measure every source; write ``report.json``, ``report.md`` and ``latency.png`` into ``out``, a new or empty
    folder unless ``force``, that appears whole at the end (``zoo.files.output_folder``)."""
    with output_folder(out, force=force) as tmp:
        return _bench(sources, opts, tmp, progress, log)


def _bench(sources: list[Source], opts: BenchOptions, out: Path, progress: bool, log: Any) -> dict[str, Any]:
    from export.files import write_json, write_text
    from export.report import bench_chart, bench_markdown, environment

    torch.set_num_threads(opts.threads)
    rows: list[LatencyRecord] = []
    models, unavailable = [], {}
    for source in sources:
        t0 = time.perf_counter()
        runtimes, missing = build_runtimes(source, opts, out / "artefacts", log)
        unavailable.update(missing)
        models.append({**source.describe(), "prepare_seconds": round(time.perf_counter() - t0, 1)})
        rows += measure(source, runtimes, opts, progress)
    settings = {**asdict(opts), "memory": opts.memory}
    report = {
        "format": REPORT_FORMAT,
        "settings": settings,
        "env": environment(),
        "models": models,
        "unavailable": unavailable,
        "results": [asdict(r) for r in rows],
        "summary": summarize([asdict(r) for r in rows]),
    }
    write_json(out / "report.json", report)
    write_text(out / "report.md", bench_markdown(report))
    bench_chart(report, out / "latency.png")
    return report
