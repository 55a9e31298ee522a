"""ONNX Runtime static int8 quantization (QDQ, per-channel weights) calibrated on real images.

Activations uint8 / weights int8 (ORT's recommended U8S8 for x86), MinMax calibration. The model is first run
through ORT's ``quant_pre_process`` (shape inference + graph optimization, e.g. BN folded into convolutions),
as ORT's quantization guide advises.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from zoo.files import atomic_output
from zoo.runtimes.base import INPUT_NAME


def quantize_int8(onnx_path: Path, out_path: Path, calib: np.ndarray, batch: int = 32) -> dict[str, Any]:
    """Write the int8 model to ``out_path``; ``calib`` are normalized NCHW float32 images."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([calib[i : i + batch] for i in range(0, len(calib), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._batches, None)
            return None if x is None else {INPUT_NAME: np.ascontiguousarray(x, np.float32)}

    with tempfile.TemporaryDirectory() as d, atomic_output(Path(out_path)) as tmp:
        pre = Path(d) / "pre.onnx"
        quant_pre_process(str(onnx_path), str(pre))
        quantize_static(
            str(pre),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return {
        "quant_format": "QDQ",
        "per_channel": True,
        "activations": "uint8",
        "weights": "int8",
        "calibration": "MinMax",
        "calibration_images": len(calib),
    }
