"""Artefact formats: how each file a runtime loads is made from a network, and one network's set of them.

``Artefacts`` builds a format on first request, and the formats made from the ONNX file (TensorRT, int8,
OpenVINO) request it first, so asking for ``int8`` alone writes the ``.onnx`` and the ``.int8.onnx``.
``BuildOptions`` are what ``proxyless export`` ships by default; latency profiling builds with the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from zoo.runtimes.base import OPSET, ExportError

Build = Callable[["Artefacts", Path], dict[str, Any]]


@dataclass(frozen=True)
class BuildOptions:
    """How artefacts are made (a cache key part: change one, get new files)."""

    batch_max: int = 64
    onnx_exporter: str = "dynamo"
    opset: int = OPSET
    pt2_mode: str = "aoti"
    fp16: bool = True  # TensorRT engines in fp16 where the TensorRT version has the flag


@dataclass(frozen=True)
class ArtefactFormat:
    """One file format. ``from_onnx``: built from the ``.onnx`` file (asking for it makes that too);
    ``default_export``: ``proxyless export`` makes it unless ``--formats`` says otherwise."""

    name: str
    suffix: str
    build: Build = field(repr=False)
    from_onnx: bool = False
    default_export: bool = True


FORMATS: dict[str, ArtefactFormat] = {}  # registration order is the order ``proxyless export`` makes them in


def register_format(fmt: ArtefactFormat) -> ArtefactFormat:
    FORMATS[fmt.name] = fmt
    return fmt


def format_names() -> tuple[str, ...]:
    return tuple(FORMATS)


def formats_from_onnx() -> frozenset[str]:
    return frozenset(f.name for f in FORMATS.values() if f.from_onnx)


def default_export_formats() -> tuple[str, ...]:
    return tuple(f.name for f in FORMATS.values() if f.default_export)


def get_format(name: str) -> ArtefactFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ExportError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}") from None


class Artefacts:
    """One network's artefacts in ``folder`` named ``stem + suffix``, each built at most once by this object;
    with ``reuse`` a file already there counts as built (a cache keyed by the stem)."""

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, int, int],
        folder: Path,
        stem: str,
        options: BuildOptions | None = None,
        *,
        device: str = "cpu",
        calibration: Callable[[], np.ndarray] | None = None,
        reuse: bool = False,
    ) -> None:
        self.model, self.input_shape, self.folder, self.stem = model.eval(), input_shape, Path(folder), stem
        self.options, self.device, self.reuse = options or BuildOptions(), device, reuse
        self._calibration = calibration
        self.built: dict[str, dict[str, Any]] = {}

    def path(self, fmt: str) -> Path:
        return self.folder / f"{self.stem}{get_format(fmt).suffix}"

    def get(self, fmt: str) -> Path:
        """The file of ``fmt``, built now unless this object built it (or, with ``reuse``, it exists)."""
        path = self.path(fmt)
        if fmt not in self.built and not (self.reuse and path.is_file()):
            self.folder.mkdir(parents=True, exist_ok=True)
            self.built[fmt] = get_format(fmt).build(self, path)
        return path

    def calibration_images(self) -> np.ndarray:
        if self._calibration is None:
            raise ExportError("int8 needs calibration images: none were given for this network")
        return self._calibration()


def _torchscript(a: Artefacts, path: Path) -> dict[str, Any]:
    from zoo.runtimes.torchscript import export_torchscript

    export_torchscript(a.model, a.input_shape, path)
    return {"note": "traced; TorchScript is deprecated by PyTorch, the .pt2 file is the modern path"}


def _onnx(a: Artefacts, path: Path) -> dict[str, Any]:
    from zoo.runtimes.onnx import export_onnx

    o = a.options
    export_onnx(a.model, a.input_shape, path, o.batch_max, o.opset, o.onnx_exporter)
    return {"exporter": o.onnx_exporter, "opset": o.opset, "dynamic_batch": [1, o.batch_max]}


def _pt2(a: Artefacts, path: Path) -> dict[str, Any]:
    from zoo.runtimes.pt2 import export_pt2

    mode = a.options.pt2_mode
    export_pt2(a.model, a.input_shape, path, a.options.batch_max, mode, a.device)
    what = {
        "aoti": f"torch.export + AOTInductor package (torch._inductor.aoti_compile_and_package), {a.device}",
        "program": "torch.export.save of the ExportedProgram (run by PyTorch when loaded)",
    }
    return {"mode": mode, "note": what[mode]}


def _tensorrt(a: Artefacts, path: Path) -> dict[str, Any]:
    from zoo.runtimes.tensorrt import build_engine

    return build_engine(a.get("onnx"), path, a.input_shape, a.options.batch_max, a.options.fp16)


def _int8(a: Artefacts, path: Path) -> dict[str, Any]:
    from zoo.runtimes.quantize import quantize_int8

    return quantize_int8(a.get("onnx"), path, a.calibration_images())


def _openvino(a: Artefacts, path: Path) -> dict[str, Any]:
    from zoo.runtimes.openvino import save_ir

    return save_ir(a.get("onnx"), path)


for _fmt in (
    ArtefactFormat("torchscript", ".pt", _torchscript),
    ArtefactFormat("onnx", ".onnx", _onnx),
    ArtefactFormat("pt2", ".pt2", _pt2),
    ArtefactFormat("openvino", ".xml", _openvino, from_onnx=True),  # + the .bin of the same stem
    ArtefactFormat("tensorrt", ".engine", _tensorrt, from_onnx=True),
    ArtefactFormat("int8", ".int8.onnx", _int8, from_onnx=True, default_export=False),
):
    register_format(_fmt)
