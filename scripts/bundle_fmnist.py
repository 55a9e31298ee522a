"""Bundle a trained Fashion-MNIST run into the zoo: measure it, then write ``zoo/pretrained/NAME``.

    python scripts/bundle_fmnist.py NAME RUN_DIR [--search-run DIR] [--note TEXT] [--metrics-from FILE] [--dest DIR]

Measures, with the project's own commands: top-1 on the full 10,000-image test set and on the fixed 2,000-image
CI subset (``zoo eval``), CPU latency at batch 1 for PyTorch eager and ONNX Runtime (``export bench``, 1 thread),
and the predicted Pixel-1, CPU-table and GPU-table (H200, PyTorch, batch 8) latencies (``search latency``).
Every figure lands in the bundled ``config.json`` metadata, so ``zoo info``, the model card and the demo show
what was measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from search.gradient.config import run_command, warmup_command  # noqa: E402
from zoo.evaluate import load_for_eval  # noqa: E402
from zoo.weights import save_pretrained  # noqa: E402

CI_SUBSET = 2000  # tests/test_zoo_bundled.py evaluates this subset (seed 0) in CI


def last_json(*cmd: str) -> dict:
    """Run a project command and parse the JSON line it ends with."""
    out = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    last = (out.stdout.strip().splitlines() or [""])[-1]
    try:
        record = json.loads(last)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        raise SystemExit(f"error: {' '.join(cmd)} did not end with a JSON object line (its last line: {last[:200]!r})")
    return record


def search_record(search_run: Path) -> dict[str, Any]:
    """The search's record in its arch.json (``extra.search``), read before minutes of measuring."""
    path = search_run / "arch.json"
    if not path.is_file():
        raise ValueError(f"--search-run {search_run}: no arch.json there")
    try:
        arch = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(arch, dict):
        raise ValueError(f"{path}: not an arch spec (a JSON object)")
    return arch.get("extra", {}).get("search", {})


def extra_metrics(path: Path) -> dict[str, Any]:
    """``--metrics-from``: what the run cannot know of itself (its seeds' protocol, its arch's provenance), a JSON
    object merged into the metrics; read before minutes of measuring."""
    try:
        extra = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--metrics-from {path}: {e}") from None
    if not isinstance(extra, dict):
        raise ValueError(f"--metrics-from {path}: not a JSON object")
    return extra


def with_commands(search: dict[str, Any], search_run: Path) -> dict[str, Any]:
    """The record with its ``command`` and ``warmup_command`` (runs from before they were recorded lack them)."""
    search = dict(search)
    if "config" in search and "command" not in search:
        search["command"] = run_command(search["config"], search_run)
    warm = Path(search.get("init_from") or "")
    if "warmup_command" not in search and warm.is_file():
        config = torch.load(warm, map_location="cpu", weights_only=True)["config"]
        search["warmup_command"] = warmup_command(config, warm.parent)
    return search


def repo_relative(value: Any) -> Any:
    """``value`` with this checkout's absolute path taken out of every string: the record is read elsewhere."""
    if isinstance(value, dict):
        return {k: repo_relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [repo_relative(v) for v in value]
    return value.replace(f"{ROOT}/", "") if isinstance(value, str) else value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--search-run", type=Path, help="the search run that produced the arch (its arch.json)")
    ap.add_argument("--note", default="", help="how it was trained, in words")
    ap.add_argument("--metrics-from", type=Path, help="a JSON object merged into the metrics (e.g. its protocol)")
    ap.add_argument("--dest", type=Path, help="where to write it (default: zoo/pretrained/NAME)")
    args = ap.parse_args()
    # the measuring commands run from the repo root: absolute paths from here on
    args.run_dir = args.run_dir.resolve()
    args.metrics_from = args.metrics_from.resolve() if args.metrics_from else None
    args.search_run = args.search_run.resolve() if args.search_run else None
    args.dest = (args.dest or ROOT / "zoo" / "pretrained" / args.name).resolve()
    try:
        return bundle(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def bundle(args: argparse.Namespace) -> int:
    """Measure RUN_DIR and write the bundle; inputs are checked first, so a bad one costs no measuring."""
    missing = [f for f in ("model.safetensors", "config.json") if not (args.run_dir / f).is_file()]
    if missing:
        raise ValueError(f"{args.run_dir} is not a finished training run: no {' or '.join(missing)} there")
    search = search_record(args.search_run) if args.search_run else None
    extra = extra_metrics(args.metrics_from) if args.metrics_from else {}
    model, info = load_for_eval(str(args.run_dir))
    metrics = dict(info.metrics)
    full = last_json("-m", "zoo", "eval", str(args.run_dir), "--json")
    subset = last_json("-m", "zoo", "eval", str(args.run_dir), "--limit", str(CI_SUBSET), "--json")
    metrics.update(
        top1=full["top1"],
        top5=full["top5"],
        n_test=full["n"],
        top1_ci_subset=subset["top1"],
        ci_subset=CI_SUBSET,
        params=info.params,
        macs=info.macs,
    )
    with tempfile.TemporaryDirectory() as tmp:
        arch = Path(tmp) / "arch.json"
        arch.write_text(info.arch.to_json())
        latency = {
            "mobile_pixel1_pred": last_json("-m", "search", "latency", str(arch), "--lut", "mobile", "--json"),
            "cpu_onnxruntime_b1_pred": last_json("-m", "search", "latency", str(arch), "--lut", "cpu", "--json"),
            "gpu_h200_torch_b8_pred": last_json("-m", "search", "latency", str(arch), "--lut", "gpu", "--json"),
        }
        report = Path(tmp) / "bench"
        last_json(
            "-m",
            "export",
            "bench",
            str(args.run_dir),
            "--runtimes",
            "torch,onnxruntime",
            "--batches",
            "1",
            "--threads",
            "1",
            "--onnx-exporter",
            "torchscript",
            "--out",
            str(report),
            "--no-progress",
        )
        rows = json.loads((report / "report.json").read_text())["results"]
    lat = {k: round(v["total"], 4) for k, v in latency.items()}
    for row in rows:
        lat[f"cpu_{row['runtime']}_b1"] = round(row["p50_ms"], 4)
    metrics["latency_ms"] = {**metrics.get("latency_ms", {}), **lat}
    metrics["latency_note"] = "cpu_*_b1: p50 on this repo's CI-class CPU, 1 thread; *_pred: latency models"
    if search is not None:
        metrics["search"] = with_commands(search, args.search_run)
    if args.note:
        metrics["train_note"] = args.note
    metrics |= extra
    meta = {
        "dataset": info.dataset,
        "input_size": info.input_size,
        "mean": info.mean,
        "std": info.std,
        "categories": info.categories,
        "source": info.source,
        "metrics": repo_relative(metrics),
    }
    out = save_pretrained(model, args.dest, meta)
    print(
        json.dumps(
            {
                "name": args.name,
                "out": str(out),
                **{k: metrics[k] for k in ("top1", "top1_ci_subset")},
                "latency_ms": metrics["latency_ms"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
