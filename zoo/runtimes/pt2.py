"""``.pt2``: the modern PyTorch deployment path (torch.export), in one of two forms.

- ``aoti``: AOTInductor compiles the exported graph to a shared library packaged in the ``.pt2``
  (``torch._inductor.aoti_compile_and_package``); it runs without Python model code. It needs a C++ compiler
  and takes about 1-1.5 min per network on this 2-core CPU.
- ``program``: ``torch.export.save`` of the ExportedProgram (seconds); loading it gives a module run by PyTorch.

Both keep the batch dimension dynamic (1..batch_max). Which form a file holds is read from its archive.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from zoo.files import atomic_output
from zoo.runtimes.base import ExportError
from zoo.runtimes.onnx import check_batch_max

MODES = ("aoti", "program")


def _quiet_inductor() -> None:
    """Inductor logs a warning about a missing CUDA runtime whenever it compiles or loads for the CPU."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def _exported(model: nn.Module, input_shape: tuple[int, int, int], batch_max: int, device: str):
    check_batch_max(batch_max)
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    batch = torch.export.Dim("batch", min=1, max=batch_max)
    module = model.eval() if device == "cpu" else copy.deepcopy(model).eval().to(device)
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))


def export_pt2(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    path: Path,
    batch_max: int = 64,
    mode: str = "aoti",
    device: str = "cpu",
) -> Path:
    """Write ``path``; an ``aoti`` package runs on the ``device`` it was compiled for."""
    if mode not in MODES:
        raise ExportError(f"unknown pt2 mode {mode!r}; choose one of {', '.join(MODES)}")
    ep = _exported(model, input_shape, batch_max, device)
    with atomic_output(Path(path)) as tmp:
        if mode == "aoti":
            _quiet_inductor()
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp))
        else:
            torch.export.save(ep, str(tmp))
    return Path(path)


def pt2_mode(path: Path) -> str:
    """``aoti`` if the archive holds AOTInductor output, else ``program``."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        raise ExportError(f"{path}: not a .pt2 archive") from None
    return "aoti" if any("/aotinductor/" in n for n in names) else "program"


def load_pt2(path: Path, device: str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    if pt2_mode(path) == "aoti":
        _quiet_inductor()
        return torch._inductor.aoti_load_package(str(path))
    return torch.export.load(str(path)).module().to(device)
