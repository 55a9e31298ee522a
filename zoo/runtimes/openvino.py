"""OpenVINO: the ONNX file converted to OpenVINO IR (``.xml`` + ``.bin`` beside it), run on the CPU in fp32 or,
where the CPU has native bf16 (AVX-512 BF16 or AMX), in bf16.

The precision is a compile-time hint (``INFERENCE_PRECISION_HINT``), not a property of the IR: one IR file serves
both runtimes. OpenVINO's CPU plugin would silently fall back to fp32 on a CPU without bf16; ``bf16_unavailable``
refuses instead, so a report never calls an fp32 run bf16.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from zoo.runtimes.base import ExportError, missing_module


def openvino_unavailable(device: str) -> str | None:
    if device != "cpu":
        return "the openvino runtime here runs on the CPU only"
    return missing_module("openvino")


def bf16_unavailable(device: str) -> str | None:
    """None if this CPU runs bf16 natively in OpenVINO, else the one-line reason."""
    reason = openvino_unavailable(device)
    if reason:
        return reason
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return "this CPU has no native bf16 (AVX-512 BF16 or AMX), so OpenVINO would run fp32"
    return None


def openvino_version() -> str:
    import openvino as ov

    return ov.__version__.split("-")[0]


def save_ir(onnx_path: Path, xml_path: Path) -> dict[str, Any]:
    """Convert the ONNX file to IR: ``xml_path`` and its ``.bin`` (weights kept fp32; precision is chosen at load)."""
    import openvino as ov

    xml_path = Path(xml_path)
    model = ov.Core().read_model(str(onnx_path))
    with tempfile.TemporaryDirectory(dir=xml_path.parent) as d:  # the pair appears whole, .bin before .xml
        staged = Path(d) / xml_path.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), xml_path.with_suffix(".bin"))
        os.replace(staged, xml_path)
    return {"openvino": openvino_version(), "weights": "fp32", "bin": xml_path.with_suffix(".bin").name}


class OpenVINOSession:
    """An IR model compiled for the CPU with ``threads`` inference threads, latency mode, fp32 or bf16."""

    def __init__(self, name: str, path: Path, precision: str = "fp32", threads: int | None = None) -> None:
        import openvino as ov

        if precision not in ("fp32", "bf16"):
            raise ExportError(f"OpenVINO precision {precision!r}: choose fp32 or bf16")
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16",
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # what the plugin runs: bf16 / f32
        self.name, self.path, self.device = name, Path(path), "cpu"
        self.provider = f"OpenVINO {openvino_version()} CPU ({got})"
        self.note = ""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(x, np.float32)})
        return np.array(result[self.compiled.output(0)], dtype=np.float32)
