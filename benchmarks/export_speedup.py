"""Speed of the exported runtimes over eager PyTorch for one network at batch 1, measured in the same run.

    python benchmarks/export_speedup.py [--model proxyless_mobile] [--threads 1] [--out runs/export_speedup]

Every runtime uses the same thread count (default 1: on a shared 2-core machine two OpenMP threads that wait on
each other at every layer can be 10x slower than one), and the timed calls alternate between runtimes in rounds
(``export.bench``). The network has random weights (seed 0) unless the zoo has weights for it. The last line is
JSON: the model, eager PyTorch's p50, the fastest exported runtime and its p50, the ratio, the same for the
fastest fp32 runtime (int8 changes the numbers computed; fp32 ones match eager within 1e-4), and OpenVINO's
(fp32 and, where the CPU has it, bf16) ratio to eager and to ONNX Runtime fp32.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.bench import BenchOptions, run_bench  # noqa: E402
from export.source import load_source  # noqa: E402

FP32 = ("torchscript", "onnxruntime", "tensorrt", "pt2", "openvino")
OPENVINO = ("openvino", "openvino-bf16")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="proxyless_mobile")
    p.add_argument("--runtimes", default="torch,torchscript,onnxruntime,onnxruntime-int8,openvino,openvino-bf16")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "export_speedup")
    args = p.parse_args(argv)
    opts = BenchOptions(
        runtimes=tuple(args.runtimes.split(",")),
        batches=(1,),
        threads=args.threads,
        iters=args.iters,
        rounds=args.rounds,
    )
    report = run_bench([load_source(args.model)], opts, args.out, force=True)  # each run replaces the last
    rows = {r["runtime"]: r for r in report["results"]}
    eager = rows["torch"]["p50_ms"]
    exported = [r for r in rows.values() if r["runtime"] != "torch"]
    best = min(exported, key=lambda r: r["p50_ms"])
    best_fp32 = min((r for r in exported if r["runtime"] in FP32), key=lambda r: r["p50_ms"])
    for r in rows.values():
        print(f"{r['runtime']:>17}: p50 {r['p50_ms']:8.2f} ms  ({eager / r['p50_ms']:.2f}x eager)")
    line = {
        "model": args.model,
        "batch": 1,
        "threads": args.threads,
        "device": report["env"]["cpu"],
        "eager_ms": round(eager, 3),
        "best_runtime": best["runtime"],
        "best_ms": round(best["p50_ms"], 3),
        "speedup": round(eager / best["p50_ms"], 2),
        "best_fp32_runtime": best_fp32["runtime"],
        "best_fp32_ms": round(best_fp32["p50_ms"], 3),
        "speedup_fp32": round(eager / best_fp32["p50_ms"], 2),
        "report": str(args.out / "report.json"),
    }
    for kind in (k for k in OPENVINO if k in rows):
        ms = rows[kind]["p50_ms"]
        line[f"{kind}_ms"] = round(ms, 3)
        line[f"{kind}_vs_eager"] = round(eager / ms, 2)
        if "onnxruntime" in rows:
            line[f"{kind}_vs_onnxruntime"] = round(rows["onnxruntime"]["p50_ms"] / ms, 2)
    line["unavailable"] = report["unavailable"]
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
