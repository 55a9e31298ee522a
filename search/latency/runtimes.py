"""Timing one module on one runtime of the registry (``zoo.runtimes``) and device, the same way for ops and networks.

A runner turns a module and its per-sample input shape into a ``Timed`` callable that runs it ``n`` times and
returns each run's ms; ``measure`` adds warm-up and repeats sized to the op's time. The module is built and
loaded by the runtime registry with the build options ``proxyless export`` ships (``BuildOptions()``: the same
exporter, opset and session options), so a table times the graph that is shipped.

Clocks: CUDA timings come from CUDA events recorded on the stream around each run, read after one synchronize.
On CPU with one thread the default clock is the calling thread's CPU time for runtimes that compute in the
calling thread then (``RuntimeSpec.caller_thread``; OpenVINO does not, and gets ``wall``): on an idle core it
equals wall time, and on a shared machine it leaves out the time other processes
hold the core, which otherwise inflates whole-network runs far more than short isolated ops. ``wall`` is
``perf_counter`` (always used with several threads, where thread CPU time would undercount).
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from search.latency.lut import LatencyError
from zoo.runtimes import BuildOptions, ExportError, get_runtime, make_session, unavailable
from zoo.runtimes.base import DEVICES

Timed = Callable[[int], np.ndarray]
CLOCKS = ("auto", "thread_cpu", "wall", "cuda_events")


@dataclass(frozen=True)
class Stats:
    mean_ms: float
    median_ms: float
    std_ms: float
    count: int
    min_ms: float

    @classmethod
    def of(cls, samples: np.ndarray) -> Stats:
        mean, median, std = float(samples.mean()), float(np.median(samples)), float(samples.std())
        return cls(mean, median, std, int(samples.size), float(samples.min()))

    def get(self, statistic: str) -> float:
        return float(getattr(self, f"{statistic}_ms"))


def measure(
    timed: Timed, budget_s: float, warmup_s: float = 0.2, min_repeats: int = 10, max_repeats: int = 5000
) -> Stats:
    """Warm up for ``warmup_s`` (at least 3 runs), then repeat to fill ``budget_s``, within the repeat bounds."""
    start, warm = time.perf_counter(), []
    while len(warm) < 3 or time.perf_counter() - start < warmup_s:
        t0 = time.perf_counter()
        timed(1)
        warm.append(time.perf_counter() - t0)
    per_run = max(float(np.median(warm)), 1e-6)
    n = int(min(max(budget_s / per_run, min_repeats), max_repeats))
    return Stats.of(timed(n))


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform's answer elsewhere), with the core count."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name} ({os.cpu_count()} cores)"


class Runner:
    """One runtime on one device with fixed threads and batch; a context manager restoring global torch state
    (and removing the artefacts it built). On CUDA with PyTorch runtimes, cuDNN autotuning is on (as a
    deployment would have it)."""

    def __init__(self, runtime: str, device_kind: str, threads: int, batch: int, clock: str = "auto") -> None:
        if threads < 1 or batch < 1:
            raise LatencyError(f"threads and batch must be >= 1, got threads={threads} batch={batch}")
        if device_kind not in DEVICES:
            raise LatencyError(f"unknown device {device_kind!r}; known: {', '.join(DEVICES)}")
        try:
            self.spec = get_runtime(runtime)
        except ExportError as e:
            raise LatencyError(str(e)) from None
        if device_kind not in self.spec.devices:
            raise LatencyError(f"runtime {runtime} runs on {'/'.join(self.spec.devices)}, not {device_kind}")
        reason = unavailable(runtime, device_kind)
        if reason:
            raise LatencyError(f"runtime {runtime} cannot run here: {reason}")
        self.runtime, self.device_kind, self.threads, self.batch = runtime, device_kind, threads, batch
        self.clock = _resolve_clock(clock, device_kind, threads, self.spec.caller_thread)
        self.options = BuildOptions()
        self._saved_threads = torch.get_num_threads()
        self._saved_benchmark = torch.backends.cudnn.benchmark
        self._workdir = tempfile.TemporaryDirectory(prefix="proxyless-profile-")

    def __enter__(self) -> Runner:
        torch.set_num_threads(self.threads)
        if self.device_kind == "cuda":
            torch.backends.cudnn.benchmark = True
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._saved_threads)
        torch.backends.cudnn.benchmark = self._saved_benchmark
        self._workdir.cleanup()

    @property
    def device_name(self) -> str:
        return torch.cuda.get_device_name() if self.device_kind == "cuda" else cpu_name()

    @property
    def version(self) -> str:
        return self.spec.version()

    @property
    def artefact_dir(self) -> Path:
        """Where the artefacts timed so far are (removed when the runner exits)."""
        return Path(self._workdir.name)

    def build_notes(self) -> dict[str, Any]:
        """How each timed artefact was made (a table's header records it; resuming requires the same)."""
        if self.spec.format is None:
            return {"artefact": "eager module"}
        return {"artefact": self.spec.format, **asdict(self.options)}

    def example(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(self.batch, *shape, generator=torch.Generator().manual_seed(0))

    def session(self, module: nn.Module, shape: tuple[int, ...]) -> Any:
        """``module`` built and loaded by the registry; int8 is calibrated on the timing input's distribution."""
        x = self.example(shape).numpy()
        return make_session(
            self.runtime,
            module.eval(),
            shape,
            self.artefact_dir,
            self.device_kind,
            self.threads,
            options=self.options,
            calibration=lambda: x,
        )

    def prepare(self, module: nn.Module, shape: tuple[int, ...]) -> Timed:
        session = self.session(module, shape)
        x = self.example(shape)
        if self.device_kind == "cuda":
            if not hasattr(session, "run_tensor"):
                raise LatencyError(f"{self.runtime} cannot be timed on the GPU alone here; use torch or tensorrt")
            xd = x.to("cuda")
            return _cuda_event_timed(lambda: session.run_tensor(xd))
        xn = x.numpy()
        return _cpu_timed(lambda: session(xn), self.clock)


def _resolve_clock(clock: str, device_kind: str, threads: int, caller_thread: bool = True) -> str:
    if clock == "auto":
        return "cuda_events" if device_kind == "cuda" else "thread_cpu" if threads == 1 and caller_thread else "wall"
    if clock not in CLOCKS:
        raise LatencyError(f"unknown clock {clock!r}; known: {', '.join(CLOCKS)}")
    if (clock == "cuda_events") != (device_kind == "cuda"):
        raise LatencyError(f"clock {clock} does not fit device {device_kind}: cuda uses cuda_events, cpu the others")
    if clock == "thread_cpu" and (threads != 1 or not caller_thread):
        raise LatencyError("clock thread_cpu needs --threads 1 and a runtime that computes in the calling thread")
    return clock


def _cpu_timed(run: Callable[[], object], clock: str) -> Timed:
    now = time.thread_time_ns if clock == "thread_cpu" else time.perf_counter_ns

    def timed(n: int) -> np.ndarray:
        out = np.empty(n)
        for i in range(n):
            t0 = now()
            run()
            out[i] = (now() - t0) / 1e6
        return out

    return timed


def _cuda_event_timed(run: Callable[[], object]) -> Timed:
    def timed(n: int) -> np.ndarray:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for s, e in zip(starts, ends, strict=True):
            s.record()
            run()
            e.record()
        torch.cuda.synchronize()
        return np.array([s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)])

    return timed


def make_runner(runtime: str, device_kind: str, threads: int, batch: int, clock: str = "auto") -> Runner:
    return Runner(runtime, device_kind, threads, batch, clock)
