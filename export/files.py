"""Small file helpers shared by the exporters: atomic writes, JSON, the errors (``ExportError`` is the runtime
registry's, so a failed build reads the same wherever it happens)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoo.files import atomic_output, atomic_write
from zoo.runtimes.base import ExportError

__all__ = ["ExportError", "ParityError", "atomic_output", "write_json", "write_text"]


class ParityError(ExportError):
    """An exported artefact whose outputs differ from eager PyTorch beyond the tolerance."""


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, text)


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=1, default=str) + "\n")


def file_bytes(path: Path | None) -> int | None:
    return Path(path).stat().st_size if path is not None and Path(path).is_file() else None
