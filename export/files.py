"""Small file helpers shared by the exporters: atomic writes, JSON, and a fingerprint of a model's weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.files import atomic_output, atomic_write

__all__ = ["ExportError", "ParityError", "atomic_output", "weights_fingerprint", "write_json", "write_text"]


class ExportError(ValueError):
    """Bad input to an export or a step that cannot be done here; the message is one line."""


class ParityError(ExportError):
    """An exported artefact whose outputs differ from eager PyTorch beyond the tolerance."""


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, text)


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=1, default=str) + "\n")


def weights_fingerprint(model: nn.Module, *extra: object) -> str:
    """sha256 of every state_dict entry (name, dtype, shape, bytes), the network's structure (its arch spec when
    it has one: strides, shortcuts and BN eps change the function, not the state_dict) plus ``extra``: a cache key
    that changes whenever the weights, or anything else the artefact depends on, change."""
    h = hashlib.sha256()
    spec = getattr(model, "spec", None)
    h.update(repr(spec.to_dict() if hasattr(spec, "to_dict") else None).encode())
    h.update(repr(model).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(repr(extra).encode())
    return h.hexdigest()


def file_bytes(path: Path | None) -> int | None:
    return Path(path).stat().st_size if path is not None and Path(path).is_file() else None
