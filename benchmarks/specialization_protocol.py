"""Run the specialization protocol fixed in docs/protocol-specialization.md; resumable; the last line is JSON.

Stages, each skipped where its files exist: (1) the Pixel-1 predictor checked against the paper's Table 4;
(2) the baseline family and the supernet's largest subnet (the teacher) extracted, and the specialized nets made
with ``specialize`` for every table and factor; (3) the fine-tunes (``search train --init --teacher --no-test``,
seeds 0..N-1) of B0 and each table's 0.75x and 1.0x nets; (4) the choice per table on the validation split,
written to ``selection.json`` *before* (5) every net is scored once on the test set, with McNemar tests,
t-intervals, the decision rule, the cross-hardware table and a Pareto plot per table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.elastic.evaluate import SubnetEvaluator
from search.elastic.latency import SubnetLatency
from search.elastic.space import ElasticSpace, Subnet
from search.elastic.specialize import SpecializeConfig, specialize
from search.elastic.store import load_supernet, resolve_supernet
from search.elastic.subnet_folder import write_subnet
from search.elastic.supernet import recalibrate_bn
from search.latency.predict import load_latency_model
from search.space import get_space
from search.stats import mcnemar, t_interval
from search.train import TrainConfig, train
from zoo import create_model
from zoo.datasets import build_eval_dataset, get_dataset
from zoo.files import atomic_write
from zoo.registry import get_model_info

PAPER_PIXEL1_MS = {"proxyless_mobile": 78.0, "proxyless_cpu": 116.0, "proxyless_gpu": 124.0}  # Table 4
BASELINES = {  # (kernel, expand, depths): uniform nets of the space, B0 = fmnist_mobilenetv2
    "B0": (3, 6, (2, 3, 3, 2)),
    "B1": (3, 3, (2, 3, 3, 2)),
    "B2": (3, 6, (1, 2, 2, 1)),
    "B3": (3, 3, (2, 2, 2, 2)),
    "B4": (3, 3, (1, 2, 2, 1)),
    "B5": (3, 6, (1, 1, 1, 1)),
}
FINE_TUNED_FACTORS = (0.75, 1.0)


def predictor_check() -> dict[str, Any]:
    """Pixel-1 predictions of the paper's three nets against its measurements (held out: never fitted to)."""
    model = load_latency_model("mobile", get_space("imagenet"))
    rows = {}
    for name, paper in PAPER_PIXEL1_MS.items():
        b = model.predict_arch(get_model_info(name).arch)
        rows[name] = {
            "predicted_ms": round(b.total_ms, 1),
            "paper_ms": paper,
            "error": round(b.total_ms / paper - 1, 3),
            "extrapolated_ops": b.predicted_ops,
        }
    order = lambda key: sorted(rows, key=lambda n: rows[n][key])  # noqa: E731
    return {"nets": rows, "same_order_as_paper": order("predicted_ms") == order("paper_ms")}


def make_nets(out: Path, args: argparse.Namespace, supernet: Any, meta: dict, ev: SubnetEvaluator) -> dict[str, Path]:
    space: ElasticSpace = supernet.space
    folders = {}
    named: dict[str, Subnet] = {k: space.uniform(kk, e, d) for k, (kk, e, d) in BASELINES.items()}
    named["teacher"] = space.largest()
    for name, subnet in named.items():
        folder = folders[name] = out / "nets" / name
        if not (folder / "config.json").is_file():
            write_subnet(
                supernet, meta, subnet, ev, folder, name, {"val_top1_inherited": ev.top1(supernet, subnet)}, name
            )
    for lut in args.luts:
        for factor in args.factors:
            name = f"{lut}_{factor}"
            folder = folders[name] = out / "nets" / name
            if not (folder / "config.json").is_file():
                cfg = SpecializeConfig(
                    lut=lut,
                    out=str(folder),
                    supernet=args.supernet,
                    factor=factor,
                    population=args.population,
                    generations=args.generations,
                    data_dir=args.data_dir,
                    name=name,
                )
                specialize(cfg, "benchmarks/specialization_protocol.py")
    return folders


def fine_tune(out: Path, args: argparse.Namespace, recipe: dict, folders: dict[str, Path]) -> dict[str, list[Path]]:
    names = ["B0", *(f"{lut}_{f}" for lut in args.luts for f in FINE_TUNED_FACTORS if f in args.factors)]
    runs: dict[str, list[Path]] = {}
    base = TrainConfig(
        arch="",
        out="",
        dataset=recipe["dataset"],
        data_dir=args.data_dir,
        epochs=args.finetune_epochs,
        lr=0.01,
        warmup_epochs=0.0,
        ema=0.0,
        val_size=recipe["val_size"],
        limit_train=args.limit_train,
        test=False,
        resume=True,
        progress=False,
        teacher=str(folders["teacher"]),
        eval_every=args.finetune_epochs,
    )
    for name in names:
        runs[name] = []
        for seed in range(args.seeds):
            run = out / "finetune" / name / f"seed{seed}"
            if not (run / "metrics.json").is_file():
                result = train(replace(base, arch=str(folders[name]), init=str(folders[name]), out=str(run), seed=seed))
                if not result["finished"]:
                    raise SystemExit(f"fine-tune {run} stopped; run again to continue")
            runs[name].append(run)
    return runs


def answers(folder: Path, ev: SubnetEvaluator, split: Any) -> np.ndarray:
    """Which images of ``split`` the net of ``folder`` (BN recalibrated on the protocol's images) gets right."""
    net = create_model(str(folder), pretrained=True).eval()
    recalibrate_bn(net, ev.calib)
    right = []
    with torch.inference_mode():
        for x, y in split:
            right.append((net(x).argmax(1) == y).numpy())
    return np.concatenate(right)


def choose(val: dict[str, float], lut: str) -> str | None:
    """Rule (2) on validation accuracies: the 0.75x net if within 0.1 points of B0, else the 1.0x net if 0.3 points
    above it, else none."""
    b0 = val["B0"]
    if val.get(f"{lut}_0.75", -1.0) >= b0 - 0.001:
        return f"{lut}_0.75"
    if val.get(f"{lut}_1.0", -1.0) >= b0 + 0.003:
        return f"{lut}_1.0"
    return None


def front(points: list[tuple[float, float]], latency: float) -> float:
    """The baseline front's accuracy at ``latency``: the upper hull of (latency, accuracy), linear between points,
    flat beyond the slowest baseline, and 0 below the fastest (no hand-designed net of the family is that fast)."""
    hull: list[tuple[float, float]] = []
    for p in sorted(points):
        if hull and p[1] <= hull[-1][1]:
            continue  # a slower baseline that is no more accurate never lowers the front
        hull.append(p)
    if latency <= hull[0][0]:
        return hull[0][1] if latency == hull[0][0] else 0.0
    for (l0, a0), (l1, a1) in itertools.pairwise(hull):
        if l0 <= latency <= l1:
            return a0 + (a1 - a0) * (latency - l0) / (l1 - l0)
    return hull[-1][1]


def _plot(path: Path, hw: dict[str, Any], luts: list[str]) -> None:
    """Accuracy against latency per table: inherited specialized nets against the baseline front, and the
    fine-tuned means with their 95% intervals."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(luts), figsize=(4.5 * len(luts), 3.8), squeeze=False)
    for ax, lut in zip(axes[0], luts, strict=True):
        rule1 = hw[lut]["rule1_inherited"]
        ms = [r["ms"] for r in rule1.values()]
        ax.plot(ms, [r["front"] * 100 for r in rule1.values()], "s--", color="gray", label="baseline front")
        ax.plot(ms, [r["top1"] * 100 for r in rule1.values()], "o-", label="specialized (inherited)")
        for f, r in hw[lut]["rule2_fine_tuned"].items():
            mean, lo, hi = (v * 100 for v in r["mean_ci"])
            ax.errorbar(
                [rule1[f]["ms"]], [mean], [[mean - lo], [hi - mean]], fmt="^", capsize=3, label=f"{f}x fine-tuned"
            )
        ax.axhline(hw[lut]["B0_fine_tuned_mean"] * 100, color="k", lw=0.8, label="B0 fine-tuned")
        ax.set_title(lut)
        ax.set_xlabel("latency (table)")
        ax.set_ylabel("test top-1 %")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--supernet", help="supernet folder or hf-hub:ORG/REPO (default: the bundled one)")
    p.add_argument("--out", default="runs/specialization_protocol")
    p.add_argument("--luts", type=lambda t: t.split(","), default=["cpu", "mobile", "gpu"])
    p.add_argument("--factors", type=lambda t: [float(f) for f in t.split(",")], default=[0.5, 0.75, 1.0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--population", type=int, default=100)
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--data-dir")
    p.add_argument("--limit-train", type=int, help="fine-tune on a subset (smoke runs only)")
    args = p.parse_args()
    out = Path(args.out)
    folder = resolve_supernet(args.supernet)
    supernet, meta = load_supernet(folder)
    recipe = meta["metadata"]["recipe"]
    ev = SubnetEvaluator.for_supernet(supernet.space, recipe, args.data_dir)
    check = predictor_check()
    folders = make_nets(out, args, supernet, meta, ev)
    runs = fine_tune(out, args, recipe, folders)
    # (4) choices on validation, fixed in a file before the test set is read
    tuned_val = {n: [answers(r, ev, ev.val).mean() for r in rs] for n, rs in runs.items()}
    val_mean = {n: float(np.mean(v)) for n, v in tuned_val.items()}
    selection = {lut: choose(val_mean, lut) for lut in args.luts}
    atomic_write(out / "selection.json", json.dumps({"val_mean": val_mean, "bundle": selection}, indent=1) + "\n")
    # (5) the test set, once
    data = get_dataset(recipe["dataset"])
    test = build_eval_dataset(data.name, "test", args.data_dir, supernet.space.backbone.input_size, data.mean, data.std)
    split = torch.utils.data.DataLoader(test, batch_size=500)
    inherited = {n: answers(f, ev, split) for n, f in folders.items() if n != "teacher"}
    tuned = {n: [answers(r, ev, split) for r in rs] for n, rs in runs.items()}
    lat = {lut: SubnetLatency.load(supernet.space, lut) for lut in args.luts}
    subnet_of = {n: supernet.space.subnet_of(create_model(str(f)).info.arch) for n, f in folders.items()}
    hw: dict[str, Any] = {}
    for lut in args.luts:
        base_pts = [(lat[lut](subnet_of[b]), float(inherited[b].mean())) for b in BASELINES]
        rule1 = {}
        for f in args.factors:
            n = f"{lut}_{f}"
            ms, acc = lat[lut](subnet_of[n]), float(inherited[n].mean())
            rule1[str(f)] = {
                "ms": round(ms, 4),
                "top1": acc,
                "front": round(front(base_pts, ms), 4),
                "mcnemar_vs_B0": mcnemar(inherited["B0"], inherited[n]),
            }
        b0 = [float(a.mean()) for a in tuned["B0"]]
        rule2 = {}
        for f in FINE_TUNED_FACTORS:
            n = f"{lut}_{f}"
            if n not in tuned:
                continue
            accs = [float(a.mean()) for a in tuned[n]]
            diffs = [a - b for a, b in zip(accs, b0, strict=True)]
            rule2[str(f)] = {
                "mean_ci": t_interval(accs) if len(accs) > 1 else (accs[0],) * 3,
                "diff_vs_B0_ci": t_interval(diffs) if len(diffs) > 1 else (diffs[0],) * 3,
                "mcnemar_per_seed": [mcnemar(a, b) for a, b in zip(tuned["B0"], tuned[n], strict=True)],
            }
        dominates = all(r["top1"] >= r["front"] for r in rule1.values())
        b0_mean = float(np.mean(b0))
        meets2 = ("0.75" in rule2 and rule2["0.75"]["mean_ci"][0] >= b0_mean - 0.001) or (
            "1.0" in rule2 and rule2["1.0"]["mean_ci"][0] >= b0_mean + 0.003
        )
        hw[lut] = {
            "rule1_inherited": rule1,
            "rule2_fine_tuned": rule2,
            "B0_fine_tuned_mean": b0_mean,
            "dominates": dominates,
            "meets_rule2": meets2,
            "decision": dominates and meets2,
            "bundle": selection[lut],
        }
    cross = {n: {lut: round(lat[lut](subnet_of[n]), 4) for lut in args.luts} for n in selection.values() if n}
    summary = {
        "predictor_check": check,
        "hardware": hw,
        "cross_hardware_ms": cross,
        "seeds": args.seeds,
        "finetune_epochs": args.finetune_epochs,
    }
    atomic_write(out / "protocol.json", json.dumps(summary, indent=1, default=float) + "\n")
    _plot(out / "pareto.png", hw, args.luts)
    print(json.dumps(summary, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
