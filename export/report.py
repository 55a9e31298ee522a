"""What a report records about the machine, and the benchmark report's Markdown table and PNG chart."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import torch

from export.files import atomic_output
from zoo.runtimes import runtime_packages


def packages() -> tuple[str, ...]:
    """The distributions whose versions a report records: every runtime's (the registry's), and numpy."""
    return (*runtime_packages(), "numpy")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """CPU model and core count, GPU name (if any) and the versions of the software that ran."""
    env: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    env.update({p: _version(p) for p in packages()})
    return env


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def _mem(row: dict[str, Any]) -> str:
    return "–" if row["peak_mem_mb"] is None else f"{row['peak_mem_mb']:.1f} ({row['peak_mem_kind']})"


def bench_markdown(report: dict[str, Any]) -> str:
    """One table per model: a row per (runtime, batch), with the speedup over eager PyTorch at that batch."""
    env, s = report["env"], report["settings"]
    lines = [
        "# Inference latency",
        "",
        f"Device: **{s['device']}** ({env['gpu'] or env['cpu']}); CPU {env['cpu']}, {s['threads']} thread(s) for every "
        f"runtime (torch.set_num_threads, ORT intra_op); {s['warmup']} warm-up calls excluded, {s['iters']} timed "
        f"calls per runtime and batch in {s['rounds']} interleaved rounds. Latency is numpy in -> numpy out; on-GPU "
        "p50 is PyTorch with the input already on the GPU (CUDA events).",
        "",
        "Software: " + ", ".join(f"{k} {env[k]}" for k in ("python", *packages()) if env.get(k)),
        "",
    ]
    for kind, why in report.get("unavailable", {}).items():
        lines.append(f"- {kind}: not measured: {why}")
    for model in report["models"]:
        rows = [r for r in report["results"] if r["model"] == model["name"]]
        lines += [
            "",
            f"## {model['name']} ({'x'.join(map(str, model['input_shape']))}, weights: {model['weights']})",
            "",
            "| runtime | provider | batch | p50 ms | p90 ms | p99 ms | mean ms | std ms | img/s | vs eager | "
            "on-GPU p50 ms | file MB | peak mem MB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        eager = {r["batch"]: r["p50_ms"] for r in rows if r["runtime"] == "torch"}
        for r in rows:
            speed = eager[r["batch"]] / r["p50_ms"] if r["batch"] in eager else None
            mb = r["file_bytes"] / 1e6 if r["file_bytes"] else None
            times = " | ".join(_fmt(r[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms"))
            lines.append(
                f"| {r['runtime']} | {r['provider']} | {r['batch']} | {times} | {_fmt(r['throughput_ips'], '.1f')} "
                f"| {_fmt(speed, '.2f')}x | {_fmt(r['gpu_p50_ms'])} | {_fmt(mb, '.1f')} | {_mem(r)} |"
            )
        notes = sorted({f"{r['runtime']}: {r['note']}" for r in rows if r.get("note")})
        if notes:
            lines += ["", *(f"- {n}" for n in notes)]
    lines += ["", f"Peak memory: {report['settings']['memory']}.", ""]
    return "\n".join(lines)


def bench_chart(report: dict[str, Any], path: Path) -> Path:
    """p50 latency per runtime, grouped by batch size, one panel per model (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m["name"] for m in report["models"]]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        rows = [r for r in report["results"] if r["model"] == name]
        runtimes = list(dict.fromkeys(r["runtime"] for r in rows))
        batches = sorted({r["batch"] for r in rows})
        width = 0.8 / max(len(runtimes), 1)
        for i, rt in enumerate(runtimes):
            ys = {r["batch"]: r["p50_ms"] for r in rows if r["runtime"] == rt}
            xs = [j + i * width for j, b in enumerate(batches) if b in ys]
            ax.bar(xs, [ys[b] for b in batches if b in ys], width, label=rt)
        ax.set_xticks([j + width * (len(runtimes) - 1) / 2 for j in range(len(batches))])
        ax.set_xticklabels([f"batch {b}" for b in batches])
        ax.set_yscale("log")
        ax.set_ylabel("p50 latency (ms, log)")
        ax.set_title(f"{name} on {report['settings']['device']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)
