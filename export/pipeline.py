"""The export command's work: write each requested artefact, run it on real images against eager PyTorch, and
record everything in ``report.json`` beside the artefacts. ``check_dir`` repeats the parity checks later.

Artefacts: ``NAME.pt`` (TorchScript), ``NAME.onnx``, ``NAME.pt2``, ``NAME.engine`` (TensorRT), ``NAME.int8.onnx``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from export.files import ExportError, ParityError, file_bytes, write_json
from export.images import ImageSet, fmnist_images, folder_images
from export.onnx_export import OPSET
from export.parity import DEFAULT_ATOL, DEFAULT_FP16_ATOL, Parity, compare, eager_logits, run_batched
from export.runtimes import available_runtimes, load_runtime
from export.source import FMNIST, Source, load_source
from zoo.weights import sha256_file

REPORT_FORMAT = "proxyless-export/1"
FORMATS = ("torchscript", "onnx", "pt2", "tensorrt", "int8")  # also the order they are made in
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx", "pt2": ".pt2", "tensorrt": ".engine", "int8": ".int8.onnx"}
RUNTIME = {"torchscript": "torchscript", "onnx": "onnxruntime", "pt2": "pt2", "tensorrt": "tensorrt"}
RUNTIME["int8"] = "onnxruntime-int8"
FP16_MIN_AGREEMENT = 0.99
SLIM_ATOL = 1e-6


@dataclass
class ExportOptions:
    formats: tuple[str, ...] = ("torchscript", "onnx", "pt2", "tensorrt")
    batch_max: int = 64
    atol: float = DEFAULT_ATOL
    fp16_atol: float = DEFAULT_FP16_ATOL
    min_agreement: float = 1.0
    parity_images: int = 256
    onnx_exporter: str = "dynamo"
    opset: int = OPSET
    slim: bool = True
    pt2_mode: str = "aoti"
    fp16: bool = True
    calib_images: int = 512
    calib_dir: Path | None = None
    eval_images: int | None = 1000  # None: the whole test split
    log: Callable[[str], None] = field(default=print, repr=False)

    def settings(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("log")
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def parse_formats(text: str) -> tuple[str, ...]:
    """Comma-separated formats, in making order; tensorrt and int8 are built from the ONNX file, so they add it."""
    asked = {f.strip() for f in text.split(",") if f.strip()}
    unknown = sorted(asked - set(FORMATS))
    if unknown or not asked:
        raise ExportError(f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    if asked & {"tensorrt", "int8"}:
        asked.add("onnx")
    return tuple(f for f in FORMATS if f in asked)


def _parity_for(fmt: str, opts: ExportOptions, precision: str = "fp32") -> tuple[float | None, float | None]:
    if fmt == "int8":
        return None, None
    if precision == "fp16":
        return opts.fp16_atol, FP16_MIN_AGREEMENT
    return opts.atol, opts.min_agreement


class _Exporter:
    """One export run: the source, its real images and eager logits, and the report being filled in."""

    def __init__(self, source: Source, out: Path, opts: ExportOptions) -> None:
        self.source, self.out, self.opts = source, Path(out), opts
        self.images = fmnist_images(source, opts.parity_images, "test")
        self.reference = eager_logits(source.model, self.images.x)
        self.artefacts: list[dict[str, Any]] = []
        self.skipped: dict[str, str] = {}

    def path(self, fmt: str) -> Path:
        return self.out / f"{self.source.name}{SUFFIX[fmt]}"

    def check(self, fmt: str, path: Path, precision: str = "fp32") -> Parity:
        atol, agree = _parity_for(fmt, self.opts, precision)
        runtime = load_runtime(RUNTIME[fmt], path, "cuda" if fmt == "tensorrt" else "cpu")
        return compare(path.name, runtime, self.images.x, self.reference, atol, agree, min(self.opts.batch_max, 64))

    def unavailable(self, fmt: str) -> str | None:
        """Why the runtime that checks ``fmt`` cannot run here (None if it can): the format is skipped, with that
        line in the report, and the other formats are still made."""
        if fmt == "pt2" and self.opts.pt2_mode != "aoti":  # a saved ExportedProgram needs no compiler
            return None
        return available_runtimes()[RUNTIME[fmt]]  # tensorrt's own reason covers a missing GPU

    def make(self, fmt: str) -> None:
        reason = self.unavailable(fmt)
        if reason:
            self.skipped[fmt] = reason
            self.opts.log(f"{fmt}: skipped: {reason}")
            return
        t0 = time.perf_counter()
        path = self.path(fmt)
        extra = getattr(self, f"_make_{fmt}")(path)
        seconds = time.perf_counter() - t0
        parity = self.check(fmt, path, extra.get("precision", "fp32"))
        entry = {"format": fmt, "file": path.name, "bytes": file_bytes(path), "sha256": sha256_file(path)}
        entry["export_seconds"] = round(seconds, 2)
        entry.update(extra)
        entry["parity"] = parity.to_dict()
        self.artefacts.append(entry)

    def _make_torchscript(self, path: Path) -> dict[str, Any]:
        from export.torchscript import export_torchscript

        export_torchscript(self.source.model, self.source.input_shape, path)
        return {"note": "traced; TorchScript is deprecated by PyTorch, the .pt2 file is the modern path"}

    def _make_onnx(self, path: Path) -> dict[str, Any]:
        from export.onnx_export import export_onnx, slim_onnx

        o = self.opts
        export_onnx(self.source.model, self.source.input_shape, path, o.batch_max, o.opset, o.onnx_exporter)
        extra: dict[str, Any] = {"exporter": o.onnx_exporter, "opset": o.opset, "dynamic_batch": [1, o.batch_max]}
        if o.slim:
            extra["onnxslim"] = self._slim(path, slim_onnx)
        return extra

    def _slim(self, path: Path, slim_onnx: Callable[[Path, Path], tuple[int, int]]) -> dict[str, Any]:
        """Keep the onnxslim copy only if ONNX Runtime gives the same logits (within 1e-6) and the same top-1."""
        try:
            import onnxslim  # noqa: F401
        except ImportError:
            return {"kept": False, "why": "onnxslim is not installed"}
        slim_path = path.with_name(f".{path.stem}.slim.onnx")
        try:
            before, after = slim_onnx(path, slim_path)
            x = self.images.x
            a = run_batched(load_runtime("onnxruntime", path), x, 64)
            b = run_batched(load_runtime("onnxruntime", slim_path), x, 64)
            diff = float(np.abs(a - b).max())
            if diff <= SLIM_ATOL and (a.argmax(1) == b.argmax(1)).all():
                os.replace(slim_path, path)
                return {"kept": True, "nodes_before": before, "nodes_after": after, "max_abs_change": diff}
            return {"kept": False, "why": f"outputs changed by up to {diff:.3g}", "nodes": [before, after]}
        finally:
            slim_path.unlink(missing_ok=True)

    def _make_pt2(self, path: Path) -> dict[str, Any]:
        from export.pt2 import export_pt2

        export_pt2(self.source.model, self.source.input_shape, path, self.opts.batch_max, self.opts.pt2_mode)
        what = {
            "aoti": "torch.export + AOTInductor package (torch._inductor.aoti_compile_and_package), CPU",
            "program": "torch.export.save of the ExportedProgram (run by PyTorch when loaded)",
        }
        return {"mode": self.opts.pt2_mode, "note": what[self.opts.pt2_mode]}

    def _make_tensorrt(self, path: Path) -> dict[str, Any]:
        from export.tensorrt_export import build_engine

        return build_engine(self.path("onnx"), path, self.source.input_shape, self.opts.batch_max, self.opts.fp16)

    def calibration(self) -> ImageSet:
        if self.opts.calib_dir is not None:
            return folder_images(self.source, self.opts.calib_dir, self.opts.calib_images)
        return fmnist_images(self.source, self.opts.calib_images, "train")

    def _make_int8(self, path: Path) -> dict[str, Any]:
        from export.quantize import accuracy, quantize_int8

        calib = self.calibration()
        extra = quantize_int8(self.path("onnx"), path, calib.x)
        extra["calibration_images"] = calib.description
        if self.source.dataset != FMNIST:
            extra["accuracy"] = f"not measured: no labelled {self.source.dataset} test set on this machine"
            return extra
        test = fmnist_images(self.source, self.opts.eval_images, "test")
        fp32 = accuracy(lambda x: eager_logits(self.source.model, x), test.x, test.labels)
        int8 = accuracy(load_runtime("onnxruntime-int8", path), test.x, test.labels)
        extra["accuracy"] = {"images": test.description, "fp32": fp32, "int8": int8, "change": int8 - fp32}
        return extra

    def report(self) -> dict[str, Any]:
        from export.report import environment

        return {
            "format": REPORT_FORMAT,
            "model": self.source.describe(),
            "settings": self.opts.settings(),
            "parity_images": self.images.description,
            "artefacts": self.artefacts,
            "skipped": self.skipped,
            "env": environment(),
        }


def _failures(artefacts: list[dict[str, Any]]) -> list[str]:
    out = []
    for a in artefacts:
        p = a["parity"]
        if not p["ok"]:
            out.append(Parity(**{k: v for k, v in p.items() if k != "ok"}).failure())
    return out


def run_export(source: Source, out: Path, opts: ExportOptions, progress: bool = True) -> dict[str, Any]:
    """Make every format of ``opts``, check each, write ``out/report.json``; raise ParityError on a mismatch
    (after the report is written, so it can be read)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ex = _Exporter(source, out, opts)
    for fmt in tqdm(opts.formats, desc=f"export {source.name}", unit="format", disable=not progress):
        ex.make(fmt)
    report = ex.report()
    write_json(out / "report.json", report)
    failures = _failures(report["artefacts"])
    if failures:
        raise ParityError(failures[0] + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""))
    return report


def check_dir(out: Path, progress: bool = True) -> dict[str, Any]:
    """Re-run the parity checks of an export directory against a freshly built eager model (e.g. after copying
    the artefacts elsewhere); raises ParityError on a mismatch and returns the new parity records.

    Each artefact must still match the sha256 its report recorded. That catches corruption and swapped files,
    not tampering: loading TorchScript and ``.pt2`` files runs their code, so check only directories you trust."""
    import json

    report_path = Path(out) / "report.json"
    if not report_path.is_file():
        raise ExportError(f"{report_path}: not found (not an export directory?)")
    try:
        report = json.loads(report_path.read_text())
        if report.get("format") != REPORT_FORMAT:
            raise ExportError(f"{report_path}: not a {REPORT_FORMAT} report")
        model, artefacts = report["model"], report["artefacts"]
        # A name whose weights were random is rebuilt from the same seed; files and directories say what they hold.
        random_name = model["weights"].startswith("random") and not Path(model["source"]).exists()
        settings = dict(report["settings"])
        settings["calib_dir"] = Path(settings["calib_dir"]) if settings.get("calib_dir") else None
        settings["formats"] = tuple(settings["formats"])
        opts = ExportOptions(**settings)
        files = [(a["format"], a["file"], a.get("precision", "fp32"), a["sha256"]) for a in artefacts]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
        raise ExportError(f"{report_path}: not a readable export report ({type(e).__name__}: {e})") from e
    for _, name, _, sha in files:
        path = Path(out) / name
        if Path(name).name != name or not path.is_file():
            raise ExportError(f"{report_path}: artefact {name!r} is not a file in {out}")
        if sha256_file(path) != sha:
            raise ExportError(f"{path}: sha256 differs from the report's (corrupt, or another export's file)")
    source = load_source(model["source"], random_weights=random_name)
    ex = _Exporter(source, Path(out), opts)
    results = []
    for fmt, name, precision, _ in tqdm(files, desc=f"check {source.name}", unit="file", disable=not progress):
        reason = ex.unavailable(fmt)
        if reason:
            opts.log(f"{fmt}: not checked: {reason}")
            continue
        parity = ex.check(fmt, Path(out) / name, precision)
        results.append({"format": fmt, "file": name, "parity": parity.to_dict()})
    failures = _failures(results)
    if failures:
        raise ParityError(failures[0])
    return {"checked": results}
