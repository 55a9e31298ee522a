"""What every runtime shares: its error, the calling convention of a loaded artefact, and input checks.

A session is called as ``session(x)`` with float32 NCHW numpy in and logits numpy out, and says what ran it
(``name``, ``device``, ``provider``, ``note``, ``path``). Sessions on the GPU also offer ``run_tensor`` (a tensor
already on the device in, a tensor on the device out), so the GPU can be timed without host copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

DEVICES = ("cpu", "cuda")
INPUT_NAME = "input"  # every exported graph: input [batch, C, H, W] -> logits [batch, classes]
OUTPUT_NAME = "logits"
OPSET = 18  # the ONNX opset shipped and profiled


class ExportError(ValueError):
    """Bad input to an export, or a step that cannot be done here; the message is one line."""


class Session(Protocol):
    name: str
    device: str
    provider: str
    note: str
    path: Path | None

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise ExportError(f"unknown device {device!r}; choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("device cuda asked for, but PyTorch sees no CUDA device")


def chw(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W); a leading batch dimension, as in (1, C, H, W), is accepted and dropped."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or min(shape) < 1:
        raise ExportError(f"input shape must be (C, H, W), got {tuple(input_shape)}")
    return shape  # type: ignore[return-value]


def missing_module(module: str) -> str | None:
    """None if ``module`` imports, else the one-line reason."""
    try:
        __import__(module)
    except ImportError as e:
        return f"{module} is not installed ({e})"
    return None
