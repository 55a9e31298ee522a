"""Timing one module on one runtime (torch, onnxruntime, tensorrt) and device, the same way for ops and networks.

A runner turns a module and its per-sample input shape into a ``Timed`` callable that runs it ``n`` times and
returns each run's ms; ``measure`` adds warm-up and repeats sized to the op's time.

Clocks: CUDA timings come from CUDA events recorded on the stream around each run, read after one synchronize.
On CPU with one thread the default clock is the calling thread's CPU time (both runtimes compute in the calling
thread then): on an idle core it equals wall time, and on a shared machine it leaves out the time other processes
hold the core, which otherwise inflates whole-network runs far more than short isolated ops. ``wall`` is
``perf_counter`` (always used with several threads, where thread CPU time would undercount).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from search.latency.lut import LatencyError

Timed = Callable[[int], np.ndarray]
RUNTIMES = ("torch", "onnxruntime", "tensorrt")
DEVICES = ("cpu", "cuda")
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


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """TorchScript-based exporter: a second per op (the dynamo exporter takes ~10 s per op)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False
        )
    return path


class Runner:
    """One runtime on one device with fixed threads and batch; a context manager restoring global torch state."""

    runtime = ""

    def __init__(self, device_kind: str, threads: int, batch: int, clock: str = "auto") -> None:
        if threads < 1 or batch < 1:
            raise LatencyError(f"threads and batch must be >= 1, got threads={threads} batch={batch}")
        if device_kind == "cuda" and not torch.cuda.is_available():
            raise LatencyError("--device cuda: torch sees no CUDA device on this machine")
        self.device_kind, self.threads, self.batch = device_kind, threads, batch
        self.clock = _resolve_clock(clock, device_kind, threads)
        self._saved_threads = torch.get_num_threads()

    def __enter__(self) -> Runner:
        torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._saved_threads)

    @property
    def device_name(self) -> str:
        return torch.cuda.get_device_name() if self.device_kind == "cuda" else cpu_name()

    @property
    def version(self) -> str:
        raise NotImplementedError

    def example(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(self.batch, *shape, generator=torch.Generator().manual_seed(0))

    def prepare(self, module: nn.Module, shape: tuple[int, ...]) -> Timed:
        raise NotImplementedError


def _resolve_clock(clock: str, device_kind: str, threads: int) -> str:
    if clock == "auto":
        return "cuda_events" if device_kind == "cuda" else "thread_cpu" if threads == 1 else "wall"
    if clock not in CLOCKS:
        raise LatencyError(f"unknown clock {clock!r}; known: {', '.join(CLOCKS)}")
    if (clock == "cuda_events") != (device_kind == "cuda"):
        raise LatencyError(f"clock {clock} does not fit device {device_kind}: cuda uses cuda_events, cpu the others")
    if clock == "thread_cpu" and threads != 1:
        raise LatencyError("clock thread_cpu needs --threads 1 (it would miss the work of the other threads)")
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


class TorchRunner(Runner):
    """Eager PyTorch in eval/inference mode; on CUDA with cuDNN autotuning on (as a deployment would)."""

    runtime = "torch"

    def __enter__(self) -> TorchRunner:
        super().__enter__()
        if self.device_kind == "cuda":
            self._saved_benchmark = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device_kind == "cuda":
            torch.backends.cudnn.benchmark = self._saved_benchmark
        super().__exit__(*exc)

    @property
    def version(self) -> str:
        return torch.__version__

    def prepare(self, module: nn.Module, shape: tuple[int, ...]) -> Timed:
        module = module.eval().to(self.device_kind)
        x = self.example(shape).to(self.device_kind)
        run = torch.inference_mode()(lambda: module(x))
        return _cuda_event_timed(run) if self.device_kind == "cuda" else _cpu_timed(run, self.clock)


class OrtRunner(Runner):
    """ONNX Runtime on CPU: one InferenceSession per op or network, all graph optimizations, fixed intra-op threads."""

    runtime = "onnxruntime"

    def __init__(self, device_kind: str, threads: int, batch: int, clock: str = "auto") -> None:
        if device_kind != "cpu":
            raise LatencyError("onnxruntime timing runs on cpu only here; for cuda use --runtime torch or tensorrt")
        super().__init__(device_kind, threads, batch, clock)
        import onnxruntime  # optional dependency (the 'export' extra)

        self._ort = onnxruntime

    @property
    def version(self) -> str:
        return self._ort.__version__

    def prepare(self, module: nn.Module, shape: tuple[int, ...]) -> Timed:
        ort = self._ort
        example = self.example(shape)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(module.eval(), example, Path(tmp) / "op.onnx")
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"x": example.numpy()}
        return _cpu_timed(lambda: session.run(None, feed), self.clock)


class TensorRTRunner(Runner):
    """TensorRT 10 engine per op/network built from its ONNX export (FP32), timed with CUDA events.

    Not exercised by this project's tests (no TensorRT on the CI machine); it announces that when it runs.
    """

    runtime = "tensorrt"

    def __init__(self, device_kind: str, threads: int, batch: int, clock: str = "auto") -> None:
        if device_kind != "cuda":
            raise LatencyError("the tensorrt runtime needs --device cuda")
        try:
            import tensorrt
        except ImportError:
            raise LatencyError(
                "the tensorrt runtime needs the 'tensorrt' Python package, which is not installed"
            ) from None
        if not torch.cuda.is_available():
            raise LatencyError("the tensorrt runtime needs CUDA, and torch sees no CUDA device")
        super().__init__(device_kind, threads, batch, clock)
        self._trt = tensorrt
        self._logger = tensorrt.Logger(tensorrt.Logger.WARNING)
        print(
            "note: the tensorrt timing path is not exercised by this project's tests (no TensorRT there)",
            file=sys.stderr,
        )

    @property
    def version(self) -> str:
        return self._trt.__version__

    def prepare(self, module: nn.Module, shape: tuple[int, ...]) -> Timed:
        trt = self._trt
        example = self.example(shape)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_bytes = export_onnx(module.eval(), example, Path(tmp) / "op.onnx").read_bytes()
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_bytes):
            raise LatencyError(f"TensorRT could not parse the ONNX export: {parser.get_error(0)}")
        serialized = builder.build_serialized_network(network, builder.create_builder_config())
        if serialized is None:
            raise LatencyError("TensorRT failed to build an engine")
        engine = trt.Runtime(self._logger).deserialize_cuda_engine(serialized)
        context = engine.create_execution_context()
        buffers = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                buffers[name] = example.cuda()
            else:
                buffers[name] = torch.empty(tuple(engine.get_tensor_shape(name)), device="cuda")
            context.set_tensor_address(name, buffers[name].data_ptr())
        stream = torch.cuda.current_stream()
        state = (engine, context, buffers)  # referenced by run() so the engine and buffers live as long as it

        def run() -> object:
            return state[1].execute_async_v3(stream.cuda_stream)

        return _cuda_event_timed(run)


def make_runner(runtime: str, device_kind: str, threads: int, batch: int, clock: str = "auto") -> Runner:
    if device_kind not in DEVICES:
        raise LatencyError(f"unknown device {device_kind!r}; known: {', '.join(DEVICES)}")
    runners = {"torch": TorchRunner, "onnxruntime": OrtRunner, "tensorrt": TensorRTRunner}
    if runtime not in runners:
        raise LatencyError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    return runners[runtime](device_kind, threads, batch, clock)
