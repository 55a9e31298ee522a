"""One calling convention for every runtime: ``runtime(x)`` with float32 NCHW numpy in, logits numpy out.

``make_runtime`` exports what a runtime needs into ``workdir`` (cached there under a fingerprint of the weights,
the input shape and the export settings, so a second call with the same network reuses the files) and loads
it; ``load_runtime`` loads an artefact that already exists (the export command's parity checks use it).
Thread counts are process-wide for PyTorch (``torch.set_num_threads``) and per session for ONNX Runtime.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from export.files import ExportError, weights_fingerprint
from export.onnx_export import INPUT_NAME, OPSET

KINDS = ("torch", "torchscript", "onnxruntime", "onnxruntime-int8", "tensorrt", "pt2")
DEFAULT_BATCH_MAX = 64
CALIB_IMAGES = 256


class Runtime(Protocol):
    name: str
    device: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def _check_device(device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise ExportError(f"unknown device {device!r}; choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("device cuda asked for, but PyTorch sees no CUDA device")


class TorchRuntime:
    """A PyTorch callable (eager module, TorchScript module or pt2 package) on ``device``."""

    def __init__(self, name: str, module: Any, device: str, note: str = "", path: Path | None = None) -> None:
        self.name, self.module, self.device, self.note, self.path = name, module, device, note, path
        self.provider = f"PyTorch {torch.__version__} ({device})"

    def run_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor already on ``device`` in, tensor on ``device`` out (no copies; for timing the GPU alone)."""
        with torch.inference_mode():
            return self.module(x)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        return self.run_tensor(t).float().cpu().numpy()


class OrtRuntime:
    """An ONNX Runtime session: CUDA provider when asked for and present, else CPU (``note`` says so)."""

    def __init__(self, name: str, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.note = ""
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                self.note = "CUDAExecutionProvider not available in this onnxruntime: ran on CPU"
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.provider = self.session.get_providers()[0]
        self.name, self.path = name, Path(path)
        self.device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(x, np.float32)})[0]


class TensorRTRuntime:
    def __init__(self, name: str, path: Path) -> None:
        from export.tensorrt_export import TensorRTRunner

        self.runner = TensorRTRunner(path)
        self.name, self.path, self.device, self.note = name, Path(path), "cuda", ""
        self.provider = f"TensorRT {self.runner.version}"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.runner(x)


def _reason_import(module: str) -> str | None:
    try:
        __import__(module)
    except ImportError as e:
        return f"{module} is not installed ({e})"
    return None


def available_runtimes(device: str = "cpu") -> dict[str, str | None]:
    """Each runtime kind -> None if it works here, else one line saying why not."""
    from export.tensorrt_export import tensorrt_unavailable

    ort_missing = _reason_import("onnxruntime") or _reason_import("onnx")
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    status: dict[str, str | None] = {
        "torch": None,
        "torchscript": None,
        "onnxruntime": ort_missing,
        "onnxruntime-int8": ort_missing,
        "tensorrt": tensorrt_unavailable(),
        "pt2": None if cxx else "AOTInductor needs a C++ compiler (c++/g++/clang++) on PATH",
    }
    if device == "cuda" and not torch.cuda.is_available():
        status = {k: "no CUDA device is available to PyTorch" for k in status}
    return status


def load_runtime(kind: str, path: Path, device: str = "cpu", threads: int | None = None) -> Runtime:
    """A runtime over an existing artefact file (``torch`` has none: use ``make_runtime``)."""
    _check_device(device)
    if threads:
        torch.set_num_threads(threads)
    if kind == "torchscript":
        from export.torchscript import load_torchscript

        return TorchRuntime(kind, load_torchscript(path, device), device, path=Path(path))
    if kind in ("onnxruntime", "onnxruntime-int8"):
        return OrtRuntime(kind, path, device, threads)
    if kind == "tensorrt":
        return TensorRTRuntime(kind, path)
    if kind == "pt2":
        from export.pt2 import load_pt2, pt2_mode

        return TorchRuntime(kind, load_pt2(path, device), device, note=f"pt2 {pt2_mode(path)}", path=Path(path))
    raise ExportError(f"unknown runtime {kind!r} for an artefact file; choose one of {', '.join(KINDS[1:])}")


def _shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W); a leading batch dimension, as in (1, C, H, W), is accepted and dropped."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or min(shape) < 1:
        raise ExportError(f"input shape must be (C, H, W), got {tuple(input_shape)}")
    return shape  # type: ignore[return-value]


def make_runtime(
    kind: str,
    model: nn.Module,
    input_shape: tuple[int, ...],
    workdir: Path,
    device: str = "cpu",
    threads: int | None = None,
    *,
    batch_max: int = DEFAULT_BATCH_MAX,
    calib: np.ndarray | None = None,
    onnx_exporter: str = "dynamo",
) -> Runtime:
    """Export ``model`` for ``kind`` into ``workdir`` (reusing earlier files of the same weights) and load it.

    ``calib``: normalized images for int8 calibration; default: real Fashion-MNIST train images preprocessed
    for the model (see ``export.images``).
    """
    if kind not in KINDS:
        raise ExportError(f"unknown runtime {kind!r}; choose one of {', '.join(KINDS)}")
    _check_device(device)
    shape = _shape(input_shape)
    reason = available_runtimes(device)[kind]
    if reason:
        raise ExportError(f"runtime {kind} is not available here: {reason}")
    if threads:
        torch.set_num_threads(threads)
    model = model.eval()
    if kind == "torch":
        module = model if device == "cpu" else copy.deepcopy(model).to(device)
        return TorchRuntime(kind, module, device)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    key = weights_fingerprint(model, shape, batch_max, torch.__version__)[:16]

    def onnx_file() -> Path:
        from export.onnx_export import export_onnx

        path = workdir / f"model-{key}-{onnx_exporter}-op{OPSET}.onnx"
        if not path.is_file():
            export_onnx(model, shape, path, batch_max, exporter=onnx_exporter)
        return path

    if kind == "torchscript":
        from export.torchscript import export_torchscript

        path = workdir / f"model-{key}.pt"
        if not path.is_file():
            export_torchscript(model, shape, path)
    elif kind == "onnxruntime":
        path = onnx_file()
    elif kind == "onnxruntime-int8":
        from export.quantize import quantize_int8

        path = workdir / f"model-{key}-{onnx_exporter}.int8.onnx"
        if not path.is_file():
            if calib is None:
                from export.images import fmnist_images
                from export.source import source_from_model

                calib = fmnist_images(source_from_model(model, shape), CALIB_IMAGES, "train").x
            quantize_int8(onnx_file(), path, calib)
    elif kind == "tensorrt":
        from export.tensorrt_export import build_engine

        gpu = torch.cuda.get_device_name().replace(" ", "_")
        path = workdir / f"model-{key}-{gpu}.engine"
        if not path.is_file():
            build_engine(onnx_file(), path, shape, batch_max)
    else:
        from export.pt2 import export_pt2

        path = workdir / f"model-{key}-{device}.pt2"
        if not path.is_file():
            export_pt2(model, shape, path, batch_max, mode="aoti", device=device)
    return load_runtime(kind, path, device, threads)
