"""The runtime registry: every way this project runs a network, by name, in one place.

A runtime is a name -> the artefact format it loads (``zoo.runtimes.formats``; none for eager PyTorch), how to
load and run that artefact (a ``Session``: numpy in, logits out), the devices it runs on, why it cannot run here,
its version and its numeric precision. Latency profiling (``search.latency``), ``proxyless export``,
``export bench`` and the demo all go through it, so a latency table times the graph that is shipped: the same
exporter, opset and session options.

``make_session`` builds what a runtime needs into a folder (cached there under a fingerprint of the weights, the
input shape, the build options and the device) and loads it; ``load_session`` loads an artefact that exists.
Every list of runtime or format names elsewhere (``export``'s formats and defaults, ``export bench``'s
runtimes, the report's package versions, the model card's words, the demo's choices) derives from these entries,
so adding a runtime is one ``register_runtime`` entry below (and ``register_format`` if its file is new) plus its
test: the recipe is in docs/architecture.md.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.runtimes.base import ExportError, Session, check_device, chw, missing_module
from zoo.runtimes.formats import Artefacts, BuildOptions

CALIB_IMAGES = 256
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
Loader = Callable[[str, Any, str, int | None], Session]  # (runtime name, artefact path or module, device, threads)


@dataclass(frozen=True)
class RuntimeSpec:
    """One runtime. ``caller_thread``: with one thread it computes in the calling thread, so that thread's CPU
    time is its latency (the profiler's ``thread_cpu`` clock); ``slow_build``: minutes to build (the demo builds
    it on first use, not at start)."""

    name: str
    label: str
    format: str | None
    load: Loader = field(repr=False)
    unavailable: Callable[[str], str | None] = field(repr=False)
    packages: tuple[str, ...]  # its distributions, the first the one whose version it reports; reports list them all
    devices: tuple[str, ...] = ("cpu",)
    precision: str = "fp32"
    caller_thread: bool = True
    slow_build: bool = False
    default_bench: bool = True  # ``export bench`` times it unless ``--runtimes`` says otherwise

    def version(self) -> str:
        from importlib.metadata import version as installed

        return installed(self.packages[0])

    def device_for(self, preferred: str = "cpu") -> str:
        """``preferred`` if this runtime runs there, else its own device (TensorRT: cuda)."""
        return preferred if preferred in self.devices else self.devices[0]


RUNTIMES: dict[str, RuntimeSpec] = {}
# Runtimes known only from measured latency tables (nothing here runs them): name -> label.
TABLE_ONLY_RUNTIMES = {"tflite": "TFLite"}


def register_runtime(spec: RuntimeSpec) -> RuntimeSpec:
    if spec.precision not in PRECISIONS:
        raise ExportError(f"runtime {spec.name}: unknown precision {spec.precision!r}")
    RUNTIMES[spec.name] = spec
    return spec


def get_runtime(name: str) -> RuntimeSpec:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ExportError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}") from None


def runtime_names() -> tuple[str, ...]:
    return tuple(RUNTIMES)


def default_bench_runtimes() -> tuple[str, ...]:
    return tuple(r.name for r in RUNTIMES.values() if r.default_bench)


def runtime_label(name: str) -> str | None:
    """How a reader names runtime ``name`` (a latency table's too); None if it is no runtime's name."""
    spec = RUNTIMES.get(name)
    return spec.label if spec else TABLE_ONLY_RUNTIMES.get(name)


def runtime_packages() -> tuple[str, ...]:
    """Every runtime's distributions, each once, in registry order: what a report records the versions of."""
    return tuple(dict.fromkeys(p for r in RUNTIMES.values() for p in r.packages))


def runtimes_of_format(fmt: str) -> list[RuntimeSpec]:
    return [r for r in RUNTIMES.values() if r.format == fmt]


def unavailable(name: str, device: str = "cpu") -> str | None:
    """None if runtime ``name`` runs here on ``device`` (or on its own device, if it has only one), else why not."""
    spec = get_runtime(name)
    device = spec.device_for(device)
    reason = spec.unavailable(device)  # its own reason first: "tensorrt is not installed" says more than "no GPU"
    if reason is None and device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is available to PyTorch"
    return reason


def available_runtimes(device: str = "cpu") -> dict[str, str | None]:
    """Each runtime -> None if it works here, else one line saying why not."""
    return {name: unavailable(name, device) for name in RUNTIMES}


def load_session(name: str, path: Path, device: str = "cpu", threads: int | None = None) -> Session:
    """A session over an existing artefact file (``torch`` has none: use ``make_session``)."""
    spec = get_runtime(name)
    if spec.format is None:
        raise ExportError(f"runtime {name} runs the module itself, not a file; use make_session")
    check_device(device)
    if threads:
        torch.set_num_threads(threads)
    return spec.load(name, Path(path), device, threads)


def weights_fingerprint(model: nn.Module, *extra: object) -> str:
    """sha256 of every state_dict entry (name, dtype, shape, bytes), the network's structure (its arch spec when
    it has one: strides, shortcuts and BN eps change the function, not the state_dict) plus ``extra``: a cache key
    that changes whenever the weights, or anything else the artefact depends on, change."""
    h = hashlib.sha256()
    spec = getattr(model, "spec", None)
    h.update(repr(spec.to_dict() if hasattr(spec, "to_dict") else None).encode())
    h.update(repr(model).encode())
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(repr(extra).encode())
    return h.hexdigest()


def _default_calibration(model: nn.Module, shape: tuple[int, int, int]) -> Callable[[], np.ndarray]:
    """Real images of the network's own dataset (its ``info``; else guessed from the input shape)."""

    def images() -> np.ndarray:
        from zoo.samples import Preprocessing, sample_images

        return sample_images(Preprocessing.of(model, shape), "calibration", CALIB_IMAGES).x

    return images


def make_session(
    name: str,
    model: nn.Module,
    input_shape: tuple[int, ...],
    workdir: Path,
    device: str = "cpu",
    threads: int | None = None,
    *,
    options: BuildOptions | None = None,
    calibration: Callable[[], np.ndarray] | None = None,
) -> Session:
    """Build ``model`` for runtime ``name`` into ``workdir`` (reusing earlier files of the same weights and
    options) and load it. ``calibration``: normalized images for int8 (default: ``_default_calibration``)."""
    spec, options = get_runtime(name), options or BuildOptions()
    check_device(device)
    shape = chw(input_shape)
    reason = unavailable(name, device)
    if reason:
        raise ExportError(f"runtime {name} is not available here: {reason}")
    if threads:
        torch.set_num_threads(threads)
    model = model.eval()
    if spec.format is None:
        return spec.load(name, model, device, threads)
    where = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    key = weights_fingerprint(model, shape, sorted(asdict(options).items()), where, torch.__version__)[:16]
    artefacts = Artefacts(
        model,
        shape,
        Path(workdir),
        f"model-{key}",
        options,
        device=device,
        calibration=calibration or _default_calibration(model, shape),
        reuse=True,
    )
    return load_session(name, artefacts.get(spec.format), device, threads)


# ---------------------------------------------------------------- the runtimes


def _torch(name: str, module: nn.Module, device: str, threads: int | None) -> Session:
    from zoo.runtimes.sessions import TorchSession

    return TorchSession(name, module if device == "cpu" else copy.deepcopy(module).to(device), device)


def _torchscript(name: str, path: Path, device: str, threads: int | None) -> Session:
    from zoo.runtimes.sessions import TorchSession
    from zoo.runtimes.torchscript import load_torchscript

    return TorchSession(name, load_torchscript(path, device), device, path=path)


def _pt2(name: str, path: Path, device: str, threads: int | None) -> Session:
    from zoo.runtimes.pt2 import load_pt2, pt2_mode
    from zoo.runtimes.sessions import TorchSession

    return TorchSession(name, load_pt2(path, device), device, note=f"pt2 {pt2_mode(path)}", path=path)


def _ort(name: str, path: Path, device: str, threads: int | None) -> Session:
    from zoo.runtimes.sessions import OrtSession

    return OrtSession(name, path, device, threads)


def _tensorrt(name: str, path: Path, device: str, threads: int | None) -> Session:
    from zoo.runtimes.tensorrt import TensorRTRunner

    return TensorRTRunner(path, name)


def _openvino(precision: str) -> Loader:
    def load(name: str, path: Path, device: str, threads: int | None) -> Session:
        from zoo.runtimes.openvino import OpenVINOSession

        return OpenVINOSession(name, path, precision, threads)

    return load


def _no_compiler(device: str) -> str | None:
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    return None if cxx else "AOTInductor needs a C++ compiler (c++/g++/clang++) on PATH"


def _ort_missing(device: str) -> str | None:
    return missing_module("onnxruntime") or missing_module("onnx")


def _tensorrt_missing(device: str) -> str | None:
    from zoo.runtimes.tensorrt import tensorrt_unavailable

    return tensorrt_unavailable()


def _openvino_missing(device: str) -> str | None:
    from zoo.runtimes.openvino import openvino_unavailable

    return _ort_missing(device) or openvino_unavailable(device)


def _openvino_bf16_missing(device: str) -> str | None:
    from zoo.runtimes.openvino import bf16_unavailable

    return _ort_missing(device) or bf16_unavailable(device)


def _nothing_missing(device: str) -> str | None:
    return None


BOTH = ("cpu", "cuda")
# ONNX Runtime's artefact is exported with onnxscript and slimmed by onnxslim: their versions matter too.
ORT = ("onnxruntime", "onnx", "onnxscript", "onnxslim")
for _spec in (
    RuntimeSpec("torch", "PyTorch", None, _torch, _nothing_missing, ("torch",), BOTH),
    RuntimeSpec("torchscript", "TorchScript", "torchscript", _torchscript, _nothing_missing, ("torch",), BOTH),
    RuntimeSpec("onnxruntime", "ONNX Runtime", "onnx", _ort, _ort_missing, ORT, BOTH),
    RuntimeSpec("onnxruntime-int8", "ONNX Runtime int8", "int8", _ort, _ort_missing, ORT, precision="int8"),
    RuntimeSpec(
        "pt2", "PyTorch .pt2 (AOTInductor)", "pt2", _pt2, _no_compiler, ("torch",), slow_build=True, default_bench=False
    ),
    RuntimeSpec(
        "openvino",
        "OpenVINO",
        "openvino",
        _openvino("fp32"),
        _openvino_missing,
        ("openvino",),
        caller_thread=False,
    ),
    RuntimeSpec(
        "openvino-bf16",
        "OpenVINO bf16",
        "openvino",
        _openvino("bf16"),
        _openvino_bf16_missing,
        ("openvino",),
        precision="bf16",
        caller_thread=False,
    ),
    RuntimeSpec(
        "tensorrt",
        "TensorRT",
        "tensorrt",
        _tensorrt,
        _tensorrt_missing,
        ("tensorrt",),
        ("cuda",),
        "fp16",
        slow_build=True,
    ),
):
    register_runtime(_spec)
