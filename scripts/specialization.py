"""Specialization table and plot: every Fashion-MNIST zoo net on every hardware. Does each specialized net win?

    python scripts/specialization.py                      # the bundled fmnist nets -> docs/specialization.{md,png}
    python scripts/specialization.py NAME_OR_DIR ... --out /tmp/spec --rounds 3

Hardware, and where each number comes from:
- ``cpu``: ONNX Runtime, batch 1, 1 thread, measured here (the search's ``cpu`` target);
- ``cpu-torch``: eager PyTorch, batch 1, 1 thread, measured here;
- ``mobile``: Pixel-1 (TFLite, batch 1), predicted by the latency predictor (no phone here);
- ``gpu``: eager PyTorch, batch 8, predicted by the table measured on a lent NVIDIA H200 (no GPU here).
CPU numbers come from one run that interleaves all nets round by round (p50 of all calls), so the ratios hold on a
shared, noisy machine. Accuracy is each net's recorded full-test-set top-1 (``zoo eval``, in its metadata).
Each specialized net and the baseline are also evaluated side by side on the test set (``--limit``: a fixed
class-balanced subset) for an exact McNemar test: is their accuracy gap larger than the luck of which images
each gets right? The verdict stays the rule below; the p-value says how much one seed's gap means.

A specialized net ``fmnist_proxyless_<hw>`` wins on its hardware when it is at least 1.3x faster there than the
MobileNetV2-style baseline (a speed worth a new net: issue 37's bar) at equal or better accuracy; ``fastest`` says
whether it is also the fastest of all nets there. Each verdict also quotes both nets' seeds (their metadata's
protocol: mean [95% interval] over seeds), so a one-seed gap reads beside the recipe's level.
Writes OUT.json (every figure) and OUT.png; ``scripts/results_tables.py`` turns the bundled nets' OUT.json into the
tables of README.md and docs/results.md (with ``--readme FILE``, the table and plot also go between FILE's
``<!-- specialization:start -->`` / ``<!-- specialization:end -->`` markers); the last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.results_tables import (  # noqa: E402
    TablesError,
    replace_block,
    seeds_cell,
    specialization_block,
    specialization_table,
    write_block,
)
from search.latency import load_latency_model  # noqa: E402
from search.space import get_space  # noqa: E402
from search.training.stats import mcnemar  # noqa: E402
from zoo import list_models  # noqa: E402
from zoo.datasets import build_eval_dataset  # noqa: E402
from zoo.evaluate import load_for_eval, right_answers  # noqa: E402
from zoo.files import atomic_output, atomic_write  # noqa: E402
from zoo.runtimes import make_session  # noqa: E402

BASELINE = "fmnist_mobilenetv2"
MEASURED = {"cpu": "onnxruntime", "cpu-torch": "torch"}
PREDICTED = {"mobile": "mobile", "gpu": "gpu"}  # hardware -> latency model (search.latency)
HARDWARE = {
    "cpu": "CPU, ONNX Runtime b1 (measured)",
    "cpu-torch": "CPU, PyTorch b1 (measured)",
    "mobile": "Pixel-1 b1 (predicted)",
    "gpu": "H200, PyTorch b8 (table)",
}
SPECIALIZED = {"cpu": "fmnist_proxyless_cpu", "mobile": "fmnist_proxyless_mobile", "gpu": "fmnist_proxyless_gpu"}
MIN_SPEEDUP = 1.3  # a win's least speed-up over the baseline on the net's own hardware


def bundled() -> list[str]:
    names = list_models(pretrained_only=True, dataset="fashion-mnist")
    order = [BASELINE, *SPECIALIZED.values()]
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def measure_cpu(models: dict[str, torch.nn.Module], rounds: int, iters: int) -> dict[str, dict[str, float]]:
    """p50 ms per (hardware, net), all (net, runtime) pairs interleaved round by round, 1 thread."""
    torch.set_num_threads(1)
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            (hw, name): make_session(kind, model, (1, 28, 28), Path(tmp) / name, "cpu", 1)
            for name, model in models.items()
            for hw, kind in MEASURED.items()
        }
        times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
        for run in runs.values():
            for _ in range(10):
                run(x)
        keys = list(runs)
        for r in range(rounds):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                for _ in range(iters):
                    t0 = time.perf_counter()
                    runs[key](x)
                    times[key].append((time.perf_counter() - t0) * 1e3)
    out: dict[str, dict[str, float]] = {hw: {} for hw in MEASURED}
    for (hw, name), ms in times.items():
        out[hw][name] = round(float(np.median(ms)), 4)
    return out


def predict(archs: dict[str, object]) -> dict[str, dict[str, float]]:
    space = get_space("fmnist")
    out = {}
    for hw, target in PREDICTED.items():
        model = load_latency_model(target, space)
        out[hw] = {name: round(model.predict_arch(arch).total_ms, 4) for name, arch in archs.items()}
    return out


def test_answers(model: torch.nn.Module, limit: int | None) -> np.ndarray:
    """Which Fashion-MNIST test images (all, or ``limit`` of them, class-balanced) ``model`` classifies right."""
    info = model.info
    data = build_eval_dataset("fashion-mnist", "test", None, info.input_size[1], info.mean, info.std, limit=limit)
    return right_answers(model, torch.utils.data.DataLoader(data, batch_size=500))


def verdicts(
    acc: dict[str, float],
    lat: dict[str, dict[str, float]],
    right: dict[str, np.ndarray] | None = None,
    seeds: dict[str, str] | None = None,
) -> dict[str, dict[str, object]]:
    """Per hardware with a specialized net present: >= MIN_SPEEDUP faster than the baseline at >= its accuracy;
    fastest of all; with ``right`` (each net's per-image answers), the paired test of its accuracy gap; with
    ``seeds`` (each net's seeds cell), both nets' seeds."""
    out = {}
    for hw, name in SPECIALIZED.items():
        if name not in acc or BASELINE not in acc:
            continue
        here = lat[hw]
        speedup = here[BASELINE] / here[name]
        out[hw] = {
            "net": name,
            "speedup_vs_baseline": round(speedup, 3),
            "accuracy_delta_points": round(100 * (acc[name] - acc[BASELINE]), 2),
            "wins": speedup >= MIN_SPEEDUP and acc[name] >= acc[BASELINE],
            "fastest": min(here, key=here.__getitem__) == name,
        }
        if right is not None:
            out[hw]["paired"] = mcnemar(right[BASELINE], right[name])
        if seeds is not None:
            out[hw]["seeds"] = {"net": seeds[name], "baseline": seeds[BASELINE]}
    return out


def plot(acc: dict[str, float], lat: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(HARDWARE), figsize=(4.2 * len(HARDWARE), 4.2), constrained_layout=True)
    markers = dict(zip(acc, "osD^vP*X", strict=False))
    for ax, (hw, title) in zip(axes, HARDWARE.items(), strict=True):
        for name in acc:
            own = SPECIALIZED.get(hw) == name or (hw == "cpu-torch" and name == SPECIALIZED["cpu"])
            ax.scatter(
                lat[hw][name],
                100 * acc[name],
                marker=markers.get(name, "o"),
                s=90 if own else 45,
                edgecolors="black" if own else "none",
                label=name,
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("latency (ms)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 on the 10k test set (%)")
    handles, labels = axes[0].get_legend_handles_labels()  # below the panels: inside, it hid points
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9)
    fig.suptitle("Fashion-MNIST zoo: every net on every hardware (outlined: the net searched for it)")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def load(nets: list[str]) -> tuple[dict[str, torch.nn.Module], dict[str, float], dict[str, dict[str, int]]]:
    """Each net's model, recorded top-1, params and MACs; a ValueError names one that cannot go in this table."""
    models, acc, size = {}, {}, {}
    for text in nets:
        model, info = load_for_eval(text)
        if info.dataset != "fashion-mnist" or list(info.input_size) != [1, 28, 28]:
            shape = "x".join(map(str, info.input_size))
            raise ValueError(f"{text} is a {info.dataset} net of input {shape}; the table is of Fashion-MNIST 1x28x28")
        top1 = (info.metrics or {}).get("top1")
        if top1 is None:
            raise ValueError(f"{text} has no recorded top1 (bundle it with scripts/bundle_fmnist.py)")
        models[info.name] = model.eval()
        acc[info.name] = float(top1)
        size[info.name] = {"params": info.params, "macs": info.macs}
    return models, acc, size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("nets", nargs="*", help="zoo names or weights dirs (default: the bundled Fashion-MNIST nets)")
    ap.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "specialization"), help="writes OUT.json and OUT.png"
    )
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds of the CPU timing")
    ap.add_argument("--iters", type=int, default=30, help="calls per net and runtime in a round")
    ap.add_argument("--readme", type=Path, help="also put the table and plot between this file's markers")
    ap.add_argument("--limit", type=int, help="paired test on a class-balanced subset of N test images (default: all)")
    args = ap.parse_args()
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    try:  # before measuring: a page without its markers is refused untouched
        if args.readme:
            replace_block(args.readme.read_text(), "specialization", "", args.readme)
    except (TablesError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    nets = args.nets or bundled()
    if not nets:
        print("error: no Fashion-MNIST nets with weights (zoo/pretrained/); name some", file=sys.stderr)
        return 2
    try:
        models, acc, size = load(nets)
        paired = [n for n in (BASELINE, *SPECIALIZED.values()) if n in models] if BASELINE in models else []
        right = {n: test_answers(models[n], args.limit) for n in paired} if len(paired) > 1 else None
    except (ValueError, OSError) as e:  # DatasetError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    lat = {**measure_cpu(models, args.rounds, args.iters), **predict({n: m.info.arch for n, m in models.items()})}
    result = verdicts(acc, lat, right, {n: seeds_cell(m.info.metrics or {}) for n, m in models.items()})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figures = {"benchmark": "specialization", "top1": acc, "size": size, "latency_ms": lat, "hardware": HARDWARE}
    figures |= {"min_speedup": MIN_SPEEDUP, "specialized": result}
    atomic_write(out.with_suffix(".json"), json.dumps(figures, indent=1) + "\n")
    plot(acc, lat, out.with_suffix(".png"))
    if args.readme:
        write_block(args.readme, "specialization", specialization_block(figures, out.with_suffix(".png"), args.readme))
    print(specialization_table(figures))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
