"""TorchScript by tracing. PyTorch deprecates TorchScript (``torch.jit.trace`` warns so since 2.10); it is kept
for runtimes that still load ``.pt`` files, and ``export.pt2`` (torch.export / AOTInductor) is the modern path."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from zoo.files import atomic_output
from zoo.runtimes.base import ExportError


def export_torchscript(model: nn.Module, input_shape: tuple[int, int, int], path: Path) -> Path:
    """Trace on a batch of 2 and let the tracer check a batch of 3 against eager, so a trace that baked in the
    batch size (or took a data-dependent branch) is refused here rather than found later."""
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, *input_shape, generator=gen)
    other = torch.randn(3, *input_shape, generator=gen)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.*is deprecated", category=Warning)
        try:
            with torch.no_grad():
                traced = torch.jit.trace(model.eval(), example, check_inputs=[(other,)], check_tolerance=1e-5)
        except torch.jit.TracingCheckError as e:
            raise ExportError(f"TorchScript trace differs from eager: {str(e).splitlines()[0]}") from None
    with atomic_output(Path(path)) as tmp:
        traced.save(str(tmp))
    return Path(path)


def load_torchscript(path: Path, device: str = "cpu") -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*is deprecated", category=Warning)
        return torch.jit.load(str(path), map_location=device).eval()
