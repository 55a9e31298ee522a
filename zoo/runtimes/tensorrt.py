"""TensorRT engines built from the ONNX file with the TensorRT Python API, and the one runner for them (used by
export parity, ``export bench``, the demo and latency profiling alike, through ``zoo.runtimes``).

Written against the documented TensorRT 10 API (``Builder.create_network``, ``OnnxParser``,
``create_optimization_profile``, ``build_serialized_network``; named I/O tensors with ``set_input_shape`` /
``set_tensor_address`` / ``execute_async_v3``) and TensorRT 11 (strongly typed networks only: the FP16 builder
flag is gone, so an 11.x engine is built in fp32 and says so). NOT VERIFIED in this repository: TensorRT could not
be installed on the development machine; every entry point reports that plainly where it cannot run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.files import atomic_output
from zoo.runtimes.base import INPUT_NAME, ExportError

WORKSPACE_BYTES = 2 << 30


def tensorrt_unavailable() -> str | None:
    """None if an engine can be built and run here, else the one-line reason."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed (pip install tensorrt; needs an NVIDIA GPU and CUDA)"
    if not torch.cuda.is_available():
        return "no CUDA device is available to PyTorch"
    return None


def _require() -> Any:
    reason = tensorrt_unavailable()
    if reason:
        raise ExportError(f"TensorRT: {reason}")
    import tensorrt as trt

    return trt


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    input_shape: tuple[int, int, int],
    batch_max: int = 64,
    fp16: bool = True,
    opt_batch: int | None = None,
) -> dict[str, Any]:
    """Parse ``onnx_path`` and build a serialized engine for batch 1..``batch_max`` (one optimization profile,
    tuned for ``opt_batch``, default ``batch_max``); returns what was built (version, precision)."""
    trt = _require()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode from TensorRT 10 on
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    precision, note = "fp32", ""
    if fp16:
        if hasattr(trt.BuilderFlag, "FP16"):  # TensorRT 10 (weak typing); removed in 11
            config.set_flag(trt.BuilderFlag.FP16)
            precision = "fp16"
        else:
            note = "TensorRT 11 has no FP16 builder flag (fp16 needs an fp16 ONNX file); built in fp32"
    profile = builder.create_optimization_profile()
    opt = min(opt_batch or batch_max, batch_max)
    profile.set_shape(INPUT_NAME, (1, *input_shape), (opt, *input_shape), (batch_max, *input_shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    with atomic_output(Path(engine_path)) as tmp:
        tmp.write_bytes(bytes(serialized))
    return {"tensorrt": trt.__version__, "precision": precision, "batch_profile": [1, opt, batch_max], "note": note}


def tensorrt_version() -> str:
    return _require().__version__


class TensorRTRunner:
    """Runs a serialized engine on the current CUDA device; buffers are PyTorch CUDA tensors (no pycuda).

    A ``zoo.runtimes`` session: ``runner(x)`` numpy in and out, ``run_tensor`` for on-GPU timing."""

    def __init__(self, engine_path: Path, name: str = "tensorrt") -> None:
        trt = _require()
        self.version = trt.__version__
        self.name, self.path, self.device, self.note = name, Path(engine_path), "cuda", ""
        self.provider = f"TensorRT {self.version}"
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise ExportError(f"{engine_path}: TensorRT could not load the engine (built by another version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ExportError(f"{engine_path}: expected one input and one output, got {inputs} / {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.output_dtype = torch.from_numpy(np.empty(0, trt.nptype(self.engine.get_tensor_dtype(outputs[0])))).dtype

    def run_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the GPU -> logits on the GPU, enqueued on PyTorch's current stream."""
        x = x.contiguous()
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            raise ExportError(f"TensorRT: input shape {tuple(x.shape)} is outside the engine's batch profile")
        out = torch.empty(
            tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype, device=x.device
        )
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(x.device).cuda_stream):
            raise ExportError("TensorRT: execute_async_v3 failed")
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.run_tensor(torch.from_numpy(np.ascontiguousarray(x, np.float32)).cuda())
        return out.float().cpu().numpy()  # .cpu() waits for the stream
