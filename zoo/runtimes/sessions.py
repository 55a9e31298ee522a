"""Sessions of the runtimes PyTorch and ONNX Runtime provide (TensorRT's and OpenVINO's live in their modules).

Thread counts are process-wide for PyTorch (``torch.set_num_threads``) and per session for ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.runtimes.base import INPUT_NAME


class TorchSession:
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


def ort_options(threads: int | None) -> Any:
    """The session options every ONNX Runtime session here gets: all graph optimizations, sequential execution,
    ``threads`` intra-op threads (0: ORT's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class OrtSession:
    """An ONNX Runtime session: CUDA provider when asked for and present, else CPU (``note`` says so)."""

    def __init__(self, name: str, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        self.note = ""
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                self.note = "CUDAExecutionProvider not available in this onnxruntime: ran on CPU"
        self.session = ort.InferenceSession(str(path), ort_options(threads), providers=providers)
        self.provider = self.session.get_providers()[0]
        self.name, self.path = name, Path(path)
        self.device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(x, np.float32)})[0]
