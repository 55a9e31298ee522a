"""ONNX export with a dynamic batch dimension, checked by ``onnx.checker`` and optionally slimmed.

Two exporters: ``dynamo`` (torch.export based; ``torch.onnx.export``'s default since PyTorch 2.9 and the one
PyTorch maintains) and ``torchscript`` (the older tracer, deprecated, about 10x faster to run here). Both give a
``batch`` input dimension; the file holds its weights inline (one self-contained ``.onnx``) and names its
exporter in ``metadata_props``, so a latency table and a shipped file can be shown to come from the same one.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from zoo.files import atomic_output
from zoo.runtimes.base import INPUT_NAME, OPSET, OUTPUT_NAME, ExportError

EXPORTERS = ("dynamo", "torchscript")
EXPORTER_KEY = "proxyless.exporter"  # metadata_props entry naming the exporter that wrote the file


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    path: Path,
    batch_max: int = 64,
    opset: int = OPSET,
    exporter: str = "dynamo",
) -> Path:
    """Write ``path`` (input ``input`` [batch, C, H, W], output ``logits`` [batch, classes]) and check it."""
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown ONNX exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if opset < 17:
        raise ExportError(f"opset {opset} is too old: 17 or newer is needed")
    check_batch_max(batch_max)
    # Batch 2, not 1: torch.export specializes a dimension whose example size is 1.
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    common = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset, external_data=False)
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=batch_max)
        kwargs = dict(dynamo=True, dynamic_shapes=({0: batch},), verbose=False)
    else:
        kwargs = dict(dynamo=False, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    with atomic_output(Path(path)) as tmp:
        # The exporters print progress and deprecation notes; our caller reports what matters in one line.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (example,), str(tmp), **common, **kwargs)
        _stamp_exporter(tmp, exporter)
        check_onnx(tmp)
    return Path(path)


def _stamp_exporter(path: Path, exporter: str) -> None:
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {EXPORTER_KEY: exporter})
    onnx.save(model, str(path))


def onnx_provenance(path: Path) -> tuple[str | None, int]:
    """(exporter, default-domain opset) of an ONNX file."""
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return props.get(EXPORTER_KEY), opset


def check_batch_max(batch_max: int) -> None:
    if batch_max < 2:  # torch.export cannot make a dynamic dimension whose range is a single size
        raise ExportError(f"batch_max must be at least 2, got {batch_max}")


def check_onnx(path: Path) -> onnx.ModelProto:
    """``onnx.checker`` (full, with shape inference), opset >= 17, one input with a symbolic batch dimension."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{path}: onnx.checker refused the model: {str(e).splitlines()[0]}") from None
    model = onnx.load(str(path))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 17:
        raise ExportError(f"{path}: opset {opset} < 17")
    inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    if len(inputs) != 1:
        raise ExportError(f"{path}: expected one input, found {[i.name for i in inputs]}")
    dim0 = inputs[0].type.tensor_type.shape.dim[0]
    if not dim0.dim_param:
        raise ExportError(f"{path}: the batch dimension is fixed ({dim0.dim_value}), not dynamic")
    return model


def slim_onnx(path: Path, out: Path) -> tuple[int, int]:
    """Write an ``onnxslim``-simplified copy of ``path`` to ``out``; returns node counts (before, after). The
    caller keeps it only if it computes the same outputs."""
    import onnxslim

    before = onnx.load(str(path))
    with contextlib.redirect_stdout(io.StringIO()):
        slim = onnxslim.slim(before)
    with atomic_output(Path(out)) as tmp:
        onnx.save(slim, str(tmp))
        check_onnx(tmp)
    return len(before.graph.node), len(slim.graph.node)
