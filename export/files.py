"""Small file helpers shared by the exporters: atomic writes, JSON, and a fingerprint of a model's weights."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn


class ExportError(ValueError):
    """Bad input to an export or a step that cannot be done here; the message is one line."""


class ParityError(ExportError):
    """An exported artefact whose outputs differ from eager PyTorch beyond the tolerance."""


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix: some writers insist on it) and rename it over ``path``
    when the block succeeds, so no reader ever sees half an artefact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; artefacts are meant to be shared
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> Path:
    with atomic_output(Path(path)) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=1, default=str) + "\n")


def weights_fingerprint(model: nn.Module, *extra: object) -> str:
    """sha256 of every state_dict entry (name, dtype, shape, bytes) plus ``extra``: a cache key that changes
    whenever the weights, or anything else the artefact depends on, change."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(repr(extra).encode())
    return h.hexdigest()


def file_bytes(path: Path | None) -> int | None:
    return Path(path).stat().st_size if path is not None and Path(path).is_file() else None
