"""``proxyless export`` (= ``python -m export``).

  proxyless export SOURCE --formats torchscript,onnx,pt2,openvino,tensorrt,int8 --out DIR   write, check, time
  proxyless export quantize SOURCE --out DIR                                      ONNX + int8 and its accuracy
  proxyless export check DIR                                                      re-run an export's parity checks
  proxyless export bench NAME... --runtimes ... --batches 1,8,32 --out DIR        latency report
  proxyless export runtimes [--json]                                              which runtimes work here

SOURCE is a zoo model name, an arch JSON file (random weights) or a weights directory (model.safetensors +
config.json). The export report carries, for every runtime of the registry that loads an artefact, its parity
with eager PyTorch and its batch-1 latency. Every command ends with one line of JSON (``runtimes``: with
``--json``); errors are one line ``error: ...`` (exit 2 for bad input, 1 for a parity mismatch). Each step is one
line on stderr (--no-progress: none). ``--out`` is a new or empty folder (``--force`` replaces a used one, an
earlier export's too); it appears whole when the command ends, and a second command writing the same folder at the
same time is refused.

Threads: runtimes are checked and timed on 1 thread, the artefacts made with PyTorch's default (one per core;
OMP_NUM_THREADS sets it); bench runs every runtime on --threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from export.bench import BenchOptions
from export.files import ExportError, ParityError
from export.pipeline import FORMATS, ExportOptions, check_dir, parse_formats, run_export
from zoo.inputs import InputError, number, read_json
from zoo.options import add_options, from_args, option


@dataclass(frozen=True)
class ExportTarget:
    """What ``export`` and ``quantize`` read and write, beside their ``ExportOptions``."""

    source: str = option(
        MISSING, "zoo model name, arch JSON file (random weights) or weights directory", positional=True
    )
    out: Path = option(MISSING, "new or empty directory for the artefacts and report.json")
    force: bool = option(False, "replace a non-empty --out (an earlier export's too)", switch=True)
    random_weights: bool = option(False, "a zoo name with random (seed 0) weights", switch=True)
    full_test: bool = option(False, "int8 accuracy on the whole test split", switch=True)
    no_progress: bool = option(False, "no step lines on stderr", switch=True)


@dataclass(frozen=True)
class RunTarget(ExportTarget):
    """``export run`` also chooses its formats."""

    formats: str = option(
        ",".join(ExportOptions.formats), f"comma-separated: {','.join(FORMATS)} (default: all but int8)"
    )


@dataclass(frozen=True)
class CheckTarget:
    dir: Path = option(MISSING, "an export directory (report.json and its artefacts)", positional=True)
    no_progress: bool = option(False, "no step lines on stderr", switch=True)


@dataclass(frozen=True, kw_only=True)  # required options among optional ones, in --help's order
class BenchTarget:
    """What ``bench`` times and where its report goes, beside its ``BenchOptions``."""

    models: tuple[str, ...] = option(
        MISSING, "zoo model names, arch JSON files or weights directories", positional=True, nargs="+"
    )
    random_weights: bool = option(False, "zoo names with random (seed 0) weights", switch=True)
    out: Path = option(MISSING, "new or empty directory for the report")
    force: bool = option(False, "replace a non-empty --out", switch=True)
    no_progress: bool = option(False, "no progress lines on stderr", switch=True)


@dataclass(frozen=True)
class RuntimesOptions:
    device: str = option("cpu", "where the runtimes would run", choices=("cpu", "cuda"))
    json: bool = option(False, "end with one JSON line: runtime -> ok or why not", switch=True)


COMMANDS: tuple[tuple[str, str, tuple[type, ...]], ...] = (  # name, help, the dataclasses of its options
    ("run", "export and check (the default: `proxyless export SOURCE ...`)", (RunTarget, ExportOptions)),
    ("quantize", "ONNX + ORT int8 static quantization, with its accuracy change", (ExportTarget, ExportOptions)),
    ("check", "re-run the parity checks of an export directory", (CheckTarget,)),
    ("bench", "latency report of zoo models across runtimes", (BenchTarget, BenchOptions)),
    ("runtimes", "which runtimes work here: ok, or why not", (RuntimesOptions,)),
)
SUBCOMMANDS = tuple(name for name, _, _ in COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="proxyless export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, help, classes in COMMANDS:
        command = sub.add_parser(name, help=help)
        for cls in classes:
            add_options(command, cls)
    return p


# The parity tolerances of an export (options, or the settings a report recorded): a string or NaN tolerance
# would fail deep in a comparison, an infinite one would pass anything.
TOLERANCES = (("atol", 1e6), ("fp16_atol", 1e6), ("bf16_atol", 1e6), ("min_agreement", 1.0))


def check_tolerances(settings: dict[str, Any], where: str) -> None:
    """Each tolerance in ``settings`` a finite number in [0, its bound], else one line naming ``where``."""
    for name, high in TOLERANCES:
        if name in settings:
            try:
                number(settings[name], name, 0.0, high)
            except InputError as e:
                raise ExportError(f"{where}: {e}") from None


def _check_report(folder: Path) -> None:
    """``report.json`` of an export folder read through the guarded reader and its tolerances checked, before
    any model is built."""
    path = folder / "report.json"
    settings = read_json(path, "an export report (report.json)").get("settings")
    if not isinstance(settings, dict):
        raise ExportError(f"{path}: no 'settings' object (not an export report?)")
    check_tolerances(settings, str(path))


def _runtimes(device: str, as_json: bool) -> int:
    """Each runtime of the registry: ``ok`` where it works here, else the reason; the JSON line says the same."""
    from zoo.runtimes import available_runtimes

    status = {name: reason or "ok" for name, reason in available_runtimes(device).items()}
    width = max(map(len, status))
    for name, said in status.items():
        print(f"{name:<{width}}  {said}")
    if as_json:
        print(json.dumps(status))
    return 0


def _export_options(args: argparse.Namespace, formats: tuple[str, ...]) -> ExportOptions:
    check_tolerances({name: getattr(args, name) for name, _ in TOLERANCES}, "options")
    return from_args(ExportOptions, args, formats=formats, eval_images=None if args.full_test else args.eval_images)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The one JSON line: per artefact, each runtime's parity and batch-1 latency (and int8's accuracy change)."""
    out: dict[str, Any] = {"model": report["model"]["name"], "eager_p50_ms": report["eager_p50_ms"]}
    out["skipped"] = report["skipped"]
    for a in report["artefacts"]:
        item: dict[str, Any] = {"file": a["file"], "ok": all(c["parity"]["ok"] for c in a["checks"])}
        for c in a["checks"]:
            p = c["parity"]
            item[c["runtime"]] = {
                "max_abs": p["max_abs"],
                "top1_agreement": p["top1_agreement"],
                "ok": p["ok"],
                "p50_ms": c["p50_ms"],
                "vs_eager": c["vs_eager"],
            }
        accuracy = a["build"].get("accuracy")
        if isinstance(accuracy, dict):
            item.update({k: accuracy[k] for k in ("fp32", "int8", "change")})
        out[a["format"]] = item
    return out


def _cmd_export(args: argparse.Namespace, formats: tuple[str, ...]) -> int:
    from export.source import load_source

    opts = _export_options(args, formats)  # checked before the model is loaded
    source = load_source(args.source, args.random_weights)
    report = run_export(source, args.out, opts, progress=not args.no_progress, force=args.force)
    print(f"wrote {len(report['artefacts'])} artefact(s) and report.json to {args.out}")
    print(json.dumps(_summary(report)))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from export.bench import run_bench
    from export.source import load_source

    opts = from_args(BenchOptions, args)
    sources = [load_source(m, args.random_weights) for m in args.models]
    report = run_bench(sources, opts, args.out, progress=not args.no_progress, force=args.force)
    print(f"wrote report.json, report.md and latency.png to {args.out}")
    env = report["env"]
    line = {
        "report": str(args.out / "report.json"),
        "device": args.device,
        "hardware": env["gpu"] or env["cpu"],
        "threads": args.threads,
        "summary": report["summary"],
    }
    print(json.dumps(line))
    return 0


def _input_errors() -> tuple[type[Exception], ...]:
    """The one-line errors of this package and of the zoo it loads models and data through."""
    from zoo.arch import ArchError
    from zoo.datasets import DatasetError
    from zoo.registry import ZooError
    from zoo.weights import WeightsError

    return ExportError, ArchError, DatasetError, ZooError, WeightsError, InputError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv.insert(0, "run")  # `proxyless export SOURCE ...`
    args = build_parser().parse_args(argv)
    try:
        if args.command == "runtimes":
            return _runtimes(args.device, args.json)
        if args.command == "check":
            _check_report(args.dir)
            print(json.dumps(check_dir(args.dir, progress=not args.no_progress)))
            return 0
        if args.command == "bench":
            return _cmd_bench(args)
        formats = parse_formats(args.formats if args.command == "run" else "int8")
        return _cmd_export(args, formats)
    except ParityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (*_input_errors(), OSError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
