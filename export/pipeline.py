"""The export command's work: write each requested artefact, run it on every runtime of the registry that loads
it (on real images, against eager PyTorch: parity; then all of them interleaved at batch 1: latency), and record
both in ``report.json`` beside the artefacts. ``check_dir`` repeats the parity checks later.

Artefacts are named after the network: ``NAME.pt`` (TorchScript), ``NAME.onnx``, ``NAME.pt2``, ``NAME.xml`` +
``NAME.bin`` (OpenVINO IR), ``NAME.engine`` (TensorRT), ``NAME.int8.onnx``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.files import ExportError, ParityError, file_bytes, write_json
from export.parity import (
    DEFAULT_ATOL,
    DEFAULT_BF16_ATOL,
    DEFAULT_FP16_ATOL,
    Parity,
    accuracy,
    compare,
    eager_logits,
    run_batched,
)
from export.source import Source, load_source
from zoo.files import output_folder
from zoo.options import option
from zoo.runtimes import (
    Artefacts,
    BuildOptions,
    RuntimeSpec,
    Session,
    default_export_formats,
    formats_from_onnx,
    load_session,
    runtimes_of_format,
    unavailable,
)
from zoo.runtimes.base import OPSET
from zoo.runtimes.formats import FORMATS
from zoo.runtimes.onnx import EXPORTERS
from zoo.runtimes.pt2 import MODES as PT2_MODES
from zoo.samples import ImageSet, sample_images
from zoo.weights import sha256_file

REPORT_FORMAT = "proxyless-export/2"
REDUCED_MIN_AGREEMENT = 0.99  # fp16 / bf16 runtimes: top-1 agreement required
SLIM_ATOL = 1e-6


@dataclass
class ExportOptions:
    """How ``proxyless export`` makes, checks and times artefacts; the fields with help are its options."""

    formats: tuple[str, ...] = default_export_formats()
    batch_max: int = option(64, "largest batch the artefacts accept")
    atol: float = option(DEFAULT_ATOL, "fp32 max abs logit difference allowed")
    fp16_atol: float = option(DEFAULT_FP16_ATOL, "the same for fp16 TensorRT engines")
    bf16_atol: float = option(DEFAULT_BF16_ATOL, "the same for OpenVINO bf16 (8 significant bits)")
    min_agreement: float = option(1.0, "fp32 top-1 agreement required")
    parity_images: int = option(256, "real test images for parity")
    parity_data: Path | None = option(None, "folder of the model's images (ImageFolder tree or files) for parity")
    onnx_exporter: str = option("dynamo", "ONNX exporter", choices=EXPORTERS)
    opset: int = option(OPSET, "ONNX opset, >= 17")
    slim: bool = option(True, "try onnxslim on the ONNX file (kept only if its outputs are the same)")
    pt2_mode: str = option("aoti", "AOTInductor package, or torch.export.save (fast to make)", choices=PT2_MODES)
    fp16: bool = option(True, "build TensorRT engines in fp16")
    calib_images: int = option(512, "int8 calibration images")
    calibration_data: Path | None = option(None, "folder of the model's images for int8 calibration")
    eval_images: int | None = option(1000, "test images for int8 accuracy (--full-test: all)")
    latency_calls: int = option(30, "batch-1 calls per runtime timed for the report (0: none)")
    log: Callable[[str], None] = field(default=print, repr=False)

    def __post_init__(self) -> None:
        counts = (self.batch_max, self.parity_images, self.calib_images, self.eval_images or 1)
        if min(counts) < 1 or self.latency_calls < 0:
            raise ExportError("batch-max, parity-images, calib-images and eval-images must be >= 1")

    def build_options(self) -> BuildOptions:
        return BuildOptions(self.batch_max, self.onnx_exporter, self.opset, self.pt2_mode, self.fp16)

    def settings(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("log")
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> ExportOptions:
        d = dict(settings)
        for key in ("parity_data", "calibration_data"):
            d[key] = Path(d[key]) if d.get(key) else None
        d["formats"] = tuple(d["formats"])
        return cls(**d)


@dataclass
class Steps:
    """One line on stderr as each step starts, after the seconds since the first: an export is otherwise silent for
    tens of seconds per format on a small machine. Quiet when not ``enabled`` (``--no-progress``)."""

    enabled: bool = True
    start: float = field(default_factory=time.perf_counter)

    def __call__(self, what: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:5.1f} s] {what}", file=sys.stderr, flush=True)


@dataclass
class Check:
    """One runtime's run of an artefact: parity with eager PyTorch, and its batch-1 latency."""

    runtime: str
    provider: str
    precision: str
    parity: Parity
    p50_ms: float | None = None
    vs_eager: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "parity": self.parity.to_dict()}


@dataclass
class Artefact:
    """A written file, what its builder says about it (exporter, opset, precision, ...) and its checks."""

    format: str
    file: str
    bytes: int | None
    sha256: str
    export_seconds: float
    build: dict[str, Any]
    checks: list[Check] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "checks": [c.to_dict() for c in self.checks]}


def parse_formats(text: str) -> tuple[str, ...]:
    """Comma-separated formats, in making order; those built from the ONNX file add it."""
    asked = {f.strip() for f in text.split(",") if f.strip()}
    unknown = sorted(asked - set(FORMATS))
    if unknown or not asked:
        raise ExportError(f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    if asked & formats_from_onnx():
        asked.add("onnx")
    return tuple(f for f in FORMATS if f in asked)


def tolerance(precision: str, opts: ExportOptions) -> tuple[float | None, float | None]:
    """(max abs logit difference, top-1 agreement) a runtime of ``precision`` is held to; int8: reported only."""
    if precision == "int8":
        return None, None
    if precision in ("fp16", "bf16"):
        return opts.fp16_atol if precision == "fp16" else opts.bf16_atol, REDUCED_MIN_AGREEMENT
    return opts.atol, opts.min_agreement


class _Exporter:
    """One export run: the source, its real images and eager logits, the artefacts and the sessions checked."""

    def __init__(self, source: Source, out: Path, opts: ExportOptions, steps: Steps) -> None:
        self.source, self.out, self.opts, self.steps = source, Path(out), opts, steps
        steps(f"{source.name}: {opts.parity_images} parity images and their eager PyTorch logits")
        self.images = sample_images(source.preprocessing, "parity", opts.parity_images, opts.parity_data)
        self.reference = eager_logits(source.model, self.images.x)
        self.files = Artefacts(
            source.model, source.input_shape, self.out, source.name, opts.build_options(), calibration=self._calib_x
        )
        self.artefacts: list[Artefact] = []
        self.sessions: dict[str, Session] = {}
        self.skipped: dict[str, str] = {}
        self._calib: ImageSet | None = None

    def calibration(self) -> ImageSet:
        if self._calib is None:
            prep, o = self.source.preprocessing, self.opts
            self.steps(f"int8: {o.calib_images} calibration images")
            self._calib = sample_images(prep, "calibration", o.calib_images, o.calibration_data)
        return self._calib

    def _calib_x(self) -> np.ndarray:
        return self.calibration().x

    def runtime_unavailable(self, spec: RuntimeSpec) -> str | None:
        if spec.name == "pt2" and self.opts.pt2_mode != "aoti":  # a saved ExportedProgram needs no compiler
            return None
        return unavailable(spec.name)

    def runnable(self, fmt: str) -> list[RuntimeSpec]:
        """The runtimes that load ``fmt`` and run here; the others are logged and listed under ``skipped``."""
        usable = []
        for spec in runtimes_of_format(fmt):
            reason = self.runtime_unavailable(spec)
            if reason:
                self.skipped[spec.name] = reason
                self.opts.log(f"{spec.name}: skipped: {reason}")
            else:
                usable.append(spec)
        return usable

    def check(self, spec: RuntimeSpec, path: Path, precision: str) -> Check:
        atol, agree = tolerance(precision, self.opts)
        self.steps(f"{path.name}: parity on {spec.name}")
        session = load_session(spec.name, path, spec.device_for("cpu"), threads=1)  # 1 thread: the latency's
        self.sessions[spec.name] = session
        batch = min(self.opts.batch_max, 64)
        parity = compare(path.name, session, self.images.x, self.reference, atol, agree, batch)
        return Check(spec.name, session.provider, precision, parity)

    def make(self, fmt: str) -> None:
        specs = self.runnable(fmt)
        if not specs:  # no runtime here can check it: not made (the reasons are logged)
            return
        self.steps(f"{fmt}: writing")
        t0 = time.perf_counter()
        path = self.files.get(fmt)
        extra = self.files.built[fmt]
        if fmt == "onnx" and self.opts.slim:
            self.steps("onnx: onnxslim, kept if ONNX Runtime gives the same logits")
            extra["onnxslim"] = self._slim(path)
        if fmt == "int8":
            extra["calibration_images"] = self.calibration().description
        seconds = time.perf_counter() - t0
        entry = Artefact(fmt, path.name, file_bytes(path), sha256_file(path), round(seconds, 2), extra)
        for spec in specs:
            entry.checks.append(self.check(spec, path, extra.get("precision", spec.precision)))
        if fmt == "int8":
            extra["accuracy"] = self._int8_accuracy(path)
        self.artefacts.append(entry)

    def _slim(self, path: Path) -> dict[str, Any]:
        """Keep the onnxslim copy only if ONNX Runtime gives the same logits (within 1e-6) and the same top-1."""
        from zoo.runtimes.onnx import slim_onnx

        try:
            import onnxslim  # noqa: F401
        except ImportError:
            return {"kept": False, "why": "onnxslim is not installed"}
        slim_path = path.with_name(f".{path.stem}.slim.onnx")
        try:
            before, after = slim_onnx(path, slim_path)
            x = self.images.x
            a = run_batched(load_session("onnxruntime", path), x, 64)
            b = run_batched(load_session("onnxruntime", slim_path), x, 64)
            diff = float(np.abs(a - b).max())
            if diff <= SLIM_ATOL and (a.argmax(1) == b.argmax(1)).all():
                os.replace(slim_path, path)
                return {"kept": True, "nodes_before": before, "nodes_after": after, "max_abs_change": diff}
            return {"kept": False, "why": f"outputs changed by up to {diff:.3g}", "nodes": [before, after]}
        finally:
            slim_path.unlink(missing_ok=True)

    def _int8_accuracy(self, path: Path) -> dict[str, Any] | str:
        self.steps(f"int8: accuracy on {self.opts.eval_images or 'all'} test images, fp32 and int8")
        test = sample_images(self.source.preprocessing, "evaluation", self.opts.eval_images, self.opts.parity_data)
        if test.labels is None:
            return f"not measured: no labelled {self.source.dataset} test images here ({test.description})"
        fp32 = accuracy(lambda x: eager_logits(self.source.model, x), test.x, test.labels)
        int8 = accuracy(load_session("onnxruntime-int8", path), test.x, test.labels)
        return {"images": test.description, "fp32": fp32, "int8": int8, "change": int8 - fp32}

    def time_runtimes(self) -> float | None:
        """Batch-1 p50 of eager PyTorch and of every checked runtime, interleaved in one measurement; eager's p50."""
        if self.opts.latency_calls < 1 or not self.sessions:
            return None
        from export.bench import BenchOptions, measure
        from zoo.runtimes import make_session

        calls = self.opts.latency_calls
        self.steps(f"latency: eager PyTorch and {len(self.sessions)} runtime(s), {calls} batch-1 calls each")
        sessions = {"torch": make_session("torch", self.source.model, self.source.input_shape, self.out)}
        sessions.update(self.sessions)
        opts = BenchOptions(runtimes=tuple(sessions), batches=(1,), warmup=3, iters=calls, rounds=min(3, calls))
        p50 = {row.runtime: row.p50_ms for row in measure(self.source, sessions, opts, progress=False)}
        for check in (c for a in self.artefacts for c in a.checks):
            check.p50_ms = p50[check.runtime]
            check.vs_eager = round(p50["torch"] / check.p50_ms, 2)
        return p50["torch"]

    def report(self, eager_p50_ms: float | None) -> dict[str, Any]:
        from export.report import environment

        return {
            "format": REPORT_FORMAT,
            "model": self.source.describe(),
            "settings": self.opts.settings(),
            "parity_images": self.images.description,
            "latency": f"batch 1, p50 of {self.opts.latency_calls} calls per runtime, interleaved, 1 thread",
            "eager_p50_ms": eager_p50_ms,
            "artefacts": [a.to_dict() for a in self.artefacts],
            "skipped": self.skipped,
            "env": environment(),
        }


def _failures(checks: list[Parity]) -> list[str]:
    return [p.failure() or "" for p in checks if not p.ok]


def _raise_failures(failures: list[str]) -> None:
    if failures:
        raise ParityError(failures[0] + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""))


def run_export(
    source: Source, out: Path, opts: ExportOptions, progress: bool = True, force: bool = False
) -> dict[str, Any]:
    """Make every format of ``opts``, check and time each, write ``out/report.json``; raise ParityError on a
    mismatch (after the folder is written, so the report can be read). ``out`` must be new or empty (an earlier
    export's folder too) unless ``force``; it appears whole when the export ends (``zoo.files.output_folder``)."""
    with output_folder(out, force=force) as tmp:
        steps = Steps(progress)
        ex = _Exporter(source, tmp, opts, steps)
        for fmt in opts.formats:
            ex.make(fmt)
        report = ex.report(ex.time_runtimes())
        write_json(tmp / "report.json", report)
    _raise_failures(_failures([c.parity for a in ex.artefacts for c in a.checks]))
    return report


def check_dir(out: Path, progress: bool = True) -> dict[str, Any]:
    """Re-run the parity checks of an export directory against a freshly built eager model (e.g. after copying
    the artefacts elsewhere); raises ParityError on a mismatch and returns the new parity records.

    Each artefact must still match the sha256 its report recorded. That catches corruption and swapped files,
    not tampering: loading TorchScript and ``.pt2`` files runs their code, so check only directories you trust."""
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
        opts = ExportOptions.from_settings(report["settings"])
        runs = [(a["file"], a["sha256"], c["runtime"], c["precision"]) for a in artefacts for c in a["checks"]]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
        raise ExportError(f"{report_path}: not a readable export report ({type(e).__name__}: {e})") from e
    for name, sha in {(name, sha) for name, sha, _, _ in runs}:
        path = Path(out) / name
        if Path(name).name != name or not path.is_file():
            raise ExportError(f"{report_path}: artefact {name!r} is not a file in {out}")
        if sha256_file(path) != sha:
            raise ExportError(f"{path}: sha256 differs from the report's (corrupt, or another export's file)")
    from zoo.runtimes import get_runtime

    ex = _Exporter(load_source(model["source"], random_weights=random_name), Path(out), opts, Steps(progress))
    checks: list[tuple[str, Check]] = []
    for name, _, runtime, precision in runs:
        spec = get_runtime(runtime)
        reason = ex.runtime_unavailable(spec)
        if reason:
            opts.log(f"{runtime}: not checked: {reason}")
            continue
        checks.append((name, ex.check(spec, Path(out) / name, precision)))
    _raise_failures(_failures([c.parity for _, c in checks]))
    return {"checked": [{"file": name, **c.to_dict()} for name, c in checks]}
