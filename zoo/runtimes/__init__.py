"""Every runtime a network can be run on (eager PyTorch, TorchScript, ONNX Runtime fp32/int8, .pt2, TensorRT,
OpenVINO fp32/bf16): one registry below ``search``, ``export`` and ``demo``, which all use it."""

from zoo.runtimes.base import ExportError, Session
from zoo.runtimes.formats import (
    Artefacts,
    BuildOptions,
    default_export_formats,
    format_names,
    formats_from_onnx,
)
from zoo.runtimes.registry import (
    RuntimeSpec,
    available_runtimes,
    default_bench_runtimes,
    get_runtime,
    load_session,
    make_session,
    register_runtime,
    runtime_label,
    runtime_names,
    runtime_packages,
    runtimes_of_format,
    unavailable,
)

__all__ = [
    "Artefacts",
    "BuildOptions",
    "ExportError",
    "RuntimeSpec",
    "Session",
    "available_runtimes",
    "default_bench_runtimes",
    "default_export_formats",
    "format_names",
    "formats_from_onnx",
    "get_runtime",
    "load_session",
    "make_session",
    "register_runtime",
    "runtime_label",
    "runtime_names",
    "runtime_packages",
    "runtimes_of_format",
    "unavailable",
]
