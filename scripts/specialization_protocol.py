"""Run the specialization protocol fixed in docs/protocol-specialization.md; resumable; the last line is JSON.

Stages, each skipped where its files exist: (1) the Pixel-1 predictor checked against the paper's Table 4;
(2) the baseline family and the supernet's largest subnet (the teacher) extracted, and the specialized nets made
with ``specialize`` for every table and factor; (3) the fine-tunes (``search train --init --teacher --no-test``,
seeds 0..N-1) of B0 and each table's 0.75x and 1.0x nets; (4) the choice per table on the validation split,
written to ``selection.json`` *before* (5) every net is scored once on the test set, with McNemar tests,
t-intervals, the decision rule, the cross-hardware table and a Pareto plot per table; the chosen seed of each
table's chosen net is written, BN recalibrated as scored, to ``OUT/bundle/<table>`` with those figures.
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
from search.elastic.extract import write_subnet
from search.elastic.latency import SubnetLatency
from search.elastic.space import ElasticSpace, Subnet
from search.elastic.specialize import SpecializeConfig, specialize
from search.elastic.store import load_supernet, resolve_supernet
from search.elastic.supernet import recalibrate_bn
from search.latency.predict import load_latency_model
from search.space import get_space
from search.training.stats import mcnemar, t_interval
from search.training.train import TrainConfig, train
from zoo import create_model
from zoo.datasets import build_eval_dataset, get_dataset
from zoo.evaluate import right_answers
from zoo.files import atomic_write
from zoo.registry import get_model_info
from zoo.weights import save_pretrained

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
                specialize(cfg, "scripts/specialization_protocol.py")
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


def scored_net(folder: Path, ev: SubnetEvaluator) -> torch.nn.Module:
    """The net of ``folder`` as the protocol scores it: BN recalibrated on the protocol's images."""
    net = create_model(str(folder), pretrained=True).eval()
    recalibrate_bn(net, ev.calib)
    return net


def answers(folder: Path, ev: SubnetEvaluator, split: Any) -> np.ndarray:
    """Which images of ``split`` the net of ``folder`` (BN recalibrated on the protocol's images) gets right."""
    return right_answers(scored_net(folder, ev), split)


def write_bundle(dest: Path, run: Path, specialized: Path, ev: SubnetEvaluator, figures: dict, top1: float) -> None:
    """The chosen seed's fine-tuned net, BN recalibrated as it was scored, as a zoo weights folder whose metadata
    carries the protocol's figures (``scripts/bundle_fmnist.py`` then measures it into ``zoo/pretrained``)."""
    net = scored_net(run, ev)
    meta = json.loads((run / "config.json").read_text())["metadata"]
    made = json.loads((specialized / "config.json").read_text())["metadata"]["metrics"]
    hw, factor = figures["hardware"], figures["net"].removeprefix(f"{figures['hardware']}_")
    meta["source"] = (
        f"specialized for {hw} from the elastic supernet (`proxyless search specialize --lut {hw} --factor {factor}`), "
        f"fine-tuned {figures['finetune_epochs']} epoch(s) with distillation from its largest subnet, seed "
        f"{figures['bundled_seed']} of "
        f"{len(figures['seeds'])} chosen on the validation split, BN recalibrated (docs/protocol-specialization.md)"
    )
    meta["metrics"] = {
        "top1": top1,
        "source": "fashion-mnist test images, evaluated once after every choice",
        "protocol": {**figures, "command": "python scripts/specialization_protocol.py"},
        "specialized": made,
    }
    save_pretrained(net, dest, meta)


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


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _ci(c: list[float]) -> str:
    return f"{100 * c[0]:.2f}% [{100 * c[1]:.2f}, {100 * c[2]:.2f}]"


def report(summary: dict[str, Any]) -> str:
    """The protocol's figures as a page: predictor check, each table's fronts and rules, the cross-hardware table."""
    check = summary["predictor_check"]
    lines = [
        "# Specialization protocol: results",
        "",
        "Made by `python scripts/specialization_protocol.py` (protocol: docs/protocol-specialization.md); test",
        f"top-1 on the 10,000 test images, evaluated once. Fine-tunes: {summary['finetune_epochs']} epoch(s), "
        f"{summary['seeds']} seeds; intervals are 95% t-intervals over the seeds.",
        "",
        "## Pixel-1 predictor against the paper's Table 4 (held out)",
        "",
        "| net | predicted ms | paper ms | error | extrapolated ops |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in check["nets"].items():
        lines.append(
            f"| `{name}` | {r['predicted_ms']} | {r['paper_ms']} | {100 * r['error']:+.1f}% | {r['extrapolated_ops']} |"
        )
    same = "the same order as" if check["same_order_as_paper"] else "a different order from"
    lines += ["", f"The predictor ranks the three nets in {same} the paper's measurements.", ""]
    for lut, h in summary["hardware"].items():
        lines += [f"## {lut}", "", "| net | latency | inherited test top-1 | baseline front there | McNemar p vs B0 |"]
        lines.append("| --- | ---: | ---: | ---: | ---: |")
        for b, r in h["baselines"].items():
            lines.append(f"| {b} (uniform) | {r['ms']} | {_pct(r['top1'])} | | |")
        for f, r in h["rule1_inherited"].items():
            lines.append(
                f"| {f}x specialized | {r['ms']} | {_pct(r['top1'])} | {_pct(r['front'])} | {r['mcnemar_vs_B0']['p']} |"
            )
        lines += [
            "",
            f"Rule 1 (the specialized front dominates the baseline front): {'yes' if h['dominates'] else 'no'}.",
        ]
        lines += ["", "| fine-tuned net | test top-1, mean [95%] | minus B0, mean [95%] | McNemar p per seed |"]
        lines.append("| --- | ---: | ---: | --- |")
        lines.append(f"| B0 (`fmnist_mobilenetv2`'s subnet) | {_pct(h['B0_fine_tuned_mean'])} | | |")
        for f, r in h["rule2_fine_tuned"].items():
            diff = r["diff_vs_B0_ci"]
            ps = ", ".join(str(m["p"]) for m in r["mcnemar_per_seed"])
            lines.append(
                f"| {f}x specialized | {_ci(r['mean_ci'])} | {100 * diff[0]:+.2f} [{100 * diff[1]:+.2f}, "
                f"{100 * diff[2]:+.2f}] points | {ps} |"
            )
        chosen = f"`{h['bundle']}` (chosen on validation)" if h["bundle"] else "none (rule 2 fails on validation)"
        lines += [
            "",
            f"Rule 2: {'yes' if h['meets_rule2'] else 'no'}. Decision: **{'holds' if h['decision'] else 'fails'}**. "
            f"Bundled: {chosen}.",
            "",
        ]
    cross = summary["cross_hardware_ms"]
    if cross:
        luts = list(summary["hardware"])
        lines += ["## Cross-hardware table (each table's unit; bold: fastest of the bundled nets there)", ""]
        lines += ["| net | " + " | ".join(luts) + " |", "| --- |" + " ---: |" * len(luts)]
        fastest = {lut: min(r[lut] for r in cross.values()) for lut in luts}
        for n, row in cross.items():
            cells = [f"**{row[lut]}**" if row[lut] == fastest[lut] else str(row[lut]) for lut in luts]
            lines.append(f"| `{n}` | " + " | ".join(cells) + " |")
        lines.append("")
    if summary.get("cpu_measured_ms"):
        measured = ", ".join(f"{n} {ms} ms" for n, ms in summary["cpu_measured_ms"].items())
        lines += [f"Measured here as the cpu table was (interleaved): {measured}.", ""]
    lines += ["![accuracy against latency per table](pareto.png)", ""]
    return "\n".join(lines)


def _plot(path: Path, hw: dict[str, Any], luts: list[str]) -> None:
    """Accuracy against latency per table: inherited specialized nets against the baseline front, and the
    fine-tuned means with their 95% intervals."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(luts), figsize=(4.5 * len(luts), 3.8), squeeze=False)
    for ax, lut in zip(axes[0], luts, strict=True):
        rule1 = hw[lut]["rule1_inherited"]
        ms = [r["ms"] for r in rule1.values()]
        base = sorted((r["ms"], r["top1"] * 100) for r in hw[lut]["baselines"].values())
        ax.plot(*zip(*base, strict=True), "s--", color="gray", label="uniform baselines (inherited)")
        ax.plot(ms, [r["top1"] * 100 for r in rule1.values()], "o-", label="specialized (inherited)")
        for f, r in hw[lut]["rule2_fine_tuned"].items():
            mean, lo, hi = (v * 100 for v in r["mean_ci"])
            ax.errorbar(
                [rule1[f]["ms"]], [mean], [[mean - lo], [hi - mean]], fmt="^", capsize=3, label=f"{f}x fine-tuned"
            )
        ax.axhline(hw[lut]["B0_fine_tuned_mean"] * 100, color="k", lw=0.8, label="B0 fine-tuned")
        ax.set_title(lut)
        ax.set_xlabel("latency (ms, from the table)")
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
    p.add_argument("--docs", type=Path, help="also write the report and plot here as DOCS.md and DOCS.png")
    args = p.parse_args()
    out = Path(args.out)
    if (out / "protocol.json").is_file():  # finished: report again from its figures, never the test set twice
        summary = json.loads((out / "protocol.json").read_text())
    else:
        summary = run(args, out)
        atomic_write(out / "protocol.json", json.dumps(summary, indent=1, default=float) + "\n")
    text = report(summary)
    atomic_write(out / "report.md", text)
    _plot(out / "pareto.png", summary["hardware"], list(summary["hardware"]))
    if args.docs:
        atomic_write(args.docs.with_suffix(".md"), text.replace("(pareto.png)", f"({args.docs.name}.png)"))
        atomic_write(args.docs.with_suffix(".png"), (out / "pareto.png").read_bytes())
    print(json.dumps(summary, default=float))
    return 0


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Stages 1-5; returns every figure."""
    folder = resolve_supernet(args.supernet)
    supernet, meta = load_supernet(folder)
    recipe = meta["metadata"]["recipe"]
    ev = SubnetEvaluator.for_supernet(supernet.space, recipe, args.data_dir)
    check = predictor_check()
    folders = make_nets(out, args, supernet, meta, ev)
    runs = fine_tune(out, args, recipe, folders)
    # (4) choices on validation, fixed in a file before the test set is read
    tuned_val = {n: [float(answers(r, ev, ev.val).mean()) for r in rs] for n, rs in runs.items()}
    val_mean = {n: float(np.mean(v)) for n, v in tuned_val.items()}
    selection = {lut: choose(val_mean, lut) for lut in args.luts}
    seed_of = {lut: int(np.argmax(tuned_val[n])) for lut, n in selection.items() if n}  # the seed bundled
    record = {"val_mean": val_mean, "val_per_seed": tuned_val, "bundle": selection, "bundle_seed": seed_of}
    atomic_write(out / "selection.json", json.dumps(record, indent=1) + "\n")
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
            "baselines": {b: {"ms": round(ms, 4), "top1": a} for b, (ms, a) in zip(BASELINES, base_pts, strict=True)},
            "rule1_inherited": rule1,
            "rule2_fine_tuned": rule2,
            "B0_fine_tuned_mean": b0_mean,
            "dominates": dominates,
            "meets_rule2": meets2,
            "decision": dominates and meets2,
            "bundle": selection[lut],
        }
    for lut, seed in seed_of.items():
        n = selection[lut]
        tuned_figures = hw[lut]["rule2_fine_tuned"][n.removeprefix(f"{lut}_")]
        figures = {
            "hardware": lut,
            "net": n,
            "seeds": list(range(args.seeds)),
            "finetune_epochs": args.finetune_epochs,
            "bundled_seed": seed,
            "val_top1_per_seed": tuned_val[n],
            "test_top1_per_seed": [float(a.mean()) for a in tuned[n]],
            "test_top1_mean_ci": tuned_figures["mean_ci"],
            "diff_vs_fmnist_mobilenetv2_ci": tuned_figures["diff_vs_B0_ci"],
            "fmnist_mobilenetv2_test_top1_mean": hw[lut]["B0_fine_tuned_mean"],
            "decision": hw[lut]["decision"],
        }
        write_bundle(out / "bundle" / lut, runs[n][seed], folders[n], ev, figures, float(tuned[n][seed].mean()))
    cross = {n: {lut: round(lat[lut](subnet_of[n]), 4) for lut in args.luts} for n in selection.values() if n}
    # the final nets measured here, as the cpu table was (runtime, threads, batch), interleaved
    final = ["B0", *sorted({n for n in selection.values() if n})]
    measured = lat["cpu"].measure([supernet.space.arch(subnet_of[n], n) for n in final], 30.0) if "cpu" in lat else None
    return {
        "predictor_check": check,
        "hardware": hw,
        "cross_hardware_ms": cross,
        "cpu_measured_ms": dict(zip(final, measured, strict=True)) if measured else None,
        "seeds": args.seeds,
        "finetune_epochs": args.finetune_epochs,
    }


if __name__ == "__main__":
    sys.exit(main())
