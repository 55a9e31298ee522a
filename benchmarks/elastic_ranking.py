"""Does the supernet rank subnets as training them alone would? Kendall tau with a bootstrap interval.

K subnets spanning the latency range (sorted by the CPU table's latency, one at each of K evenly spaced
quantiles of 2,000 seeded draws: chosen before any accuracy is seen, and pinned in OUT/subnets.json) are each
trained alone with one short schedule (``proxyless search train``: same training split, the validation split
held out) and scored on the validation split; their supernet-inherited accuracies (BN recalibrated) are scored
on the same images. Resumable: each training lives in RUNS/<subnet>/ (large, not kept) and a subnet counts as
done once its validation accuracy is in OUT/standalone.csv (small, kept); ``--budget-min`` stops the running
one checkpointed, and ``--standalone-only`` trains them before any supernet exists (the choice of subnets needs
only the space and the table). The acceptance of issue 24 is tau >= 0.6. ``--noise-seeds N`` then trains the
median-latency subnet again with seeds 1..N (OUT/seed_noise.csv): if its seed-to-seed spread is as large as the
spread between subnets, the stand-alone ranking is noise and tau cannot be read. The last line is JSON;
``OUT/ranking.png`` plots the two accuracies.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.elastic.evaluate import SubnetEvaluator
from search.elastic.extract import parse_subnet
from search.elastic.latency import SubnetLatency
from search.elastic.space import ElasticSpace, Subnet, get_elastic_space
from search.elastic.store import load_supernet, resolve_supernet
from search.elastic.train import ElasticTrainConfig
from search.training.stats import bootstrap_tau, kendall_tau
from search.training.train import TrainConfig, train
from zoo.files import atomic_write


def spanning_subnets(space: ElasticSpace, latency: SubnetLatency, k: int, seed: int = 0) -> list[Subnet]:
    rng = random.Random(seed)
    drawn = sorted({space.sample(rng) for _ in range(2000)}, key=latency)
    return [drawn[int((i + 0.5) / k * len(drawn))] for i in range(k)]


def _settings(out: Path, settings: dict) -> None:
    """The stand-alone schedule a results folder was made with; another one would mix incomparable figures."""
    path = out / "settings.json"
    if path.is_file() and json.loads(path.read_text()) != settings:
        raise SystemExit(f"{path} holds other settings ({path.read_text().strip()}); use another --out")
    atomic_write(path, json.dumps(settings, indent=1) + "\n")


def _chosen(out: Path, space: ElasticSpace, latency: SubnetLatency, k: int) -> list[Subnet]:
    """The K subnets, drawn once and pinned in OUT/subnets.json: re-profiling the CPU table later must not swap
    the subnets of a half-done run for others."""
    path = out / "subnets.json"
    if path.is_file():
        return [parse_subnet(space, name) for name in json.loads(path.read_text())]
    chosen = spanning_subnets(space, latency, k)
    atomic_write(path, json.dumps([str(s) for s in chosen], indent=1) + "\n")
    return chosen


def trained_alone(csv_path: Path) -> dict[str, float]:
    """Stand-alone validation top-1 by subnet, of those in ``csv_path`` (OUT/standalone.csv) so far."""
    if not csv_path.is_file():
        return {}
    with csv_path.open() as f:
        return {r["subnet"]: float(r["standalone_val_top1"]) for r in csv.DictReader(f)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--supernet", help="supernet folder or hf-hub:ORG/REPO (default: the bundled one)")
    p.add_argument("--standalone-only", action="store_true", help="train the stand-alone subnets only (no supernet)")
    p.add_argument("--space", default="fmnist", help="elastic space (with --standalone-only)")
    p.add_argument("--out", default="benchmarks/results/elastic_ranking", help="results: CSV, JSON, PNG (small)")
    p.add_argument("--runs", default="runs/elastic_ranking", help="the stand-alone trainings (resumable, large)")
    p.add_argument("--subnets", type=int, default=12, help="K subnets spanning the CPU-latency range")
    p.add_argument("--epochs", type=int, default=4, help="stand-alone schedule: epochs (cosine, batch 256)")
    p.add_argument("--budget-min", type=float, help="stop (checkpointed) after this many minutes of training")
    p.add_argument("--data-dir", help="dataset folder")
    p.add_argument("--limit-train", type=int, help="stand-alone training on a class-balanced subset (smoke runs)")
    p.add_argument("--device", default="cpu", help="where the stand-alone nets train (cuda: a 40-epoch ground truth)")
    p.add_argument("--noise-seeds", type=int, default=0, help="retrain the median subnet with seeds 1..N")
    args = p.parse_args()
    if args.subnets < 4:
        p.error("--subnets must be >= 4 for a rank correlation to mean anything")
    supernet = None
    if args.standalone_only:
        space, defaults = get_elastic_space(args.space), ElasticTrainConfig(out="")
        recipe = {"dataset": defaults.dataset, "val_size": defaults.val_size}
    else:
        supernet, meta = load_supernet(resolve_supernet(args.supernet))
        space, recipe = supernet.space, meta["metadata"]["recipe"]
    out, runs = Path(args.out), Path(args.runs)
    settings = {
        "space": space.name,
        "dataset": recipe["dataset"],
        "val_size": recipe["val_size"],
        "subnets": args.subnets,
        "epochs": args.epochs,
        "limit_train": args.limit_train,
    }
    _settings(out, settings)
    latency = SubnetLatency.load(space, "cpu")
    chosen = _chosen(out, space, latency, args.subnets)
    base = TrainConfig(
        arch="",
        out="",
        dataset=recipe["dataset"],
        data_dir=args.data_dir,
        epochs=args.epochs,
        warmup_epochs=0.5,
        ema=0.0,
        val_size=recipe["val_size"],
        limit_train=args.limit_train,
        eval_every=args.epochs,
        device=args.device,
        progress=False,
        resume=True,
        test=False,
    )
    csv_path = out / "standalone.csv"
    done, started = trained_alone(csv_path), time.monotonic()
    for i, subnet in enumerate(chosen):
        if str(subnet) in done:
            continue
        left = None if args.budget_min is None else args.budget_min - (time.monotonic() - started) / 60
        if left is not None and left <= 0:
            break
        arch_file = runs / "archs" / f"{subnet}.json"
        atomic_write(arch_file, space.arch(subnet, f"rank{i}").to_json())
        result = train(replace(base, arch=str(arch_file), out=str(runs / str(subnet)), time_limit_minutes=left))
        if not result["finished"]:
            break
        done[str(subnet)] = result["val_top1"]
        rows = [
            {"subnet": k, "cpu_ms": round(latency(s), 4), "standalone_val_top1": done[k]}
            for s in chosen
            if (k := str(s)) in done
        ]
        atomic_write(csv_path, _csv(rows))
    summary: dict = {"subnets": len(done), "of": len(chosen), "epochs": args.epochs}
    if len(done) == len(chosen):
        left = None if args.budget_min is None else args.budget_min - (time.monotonic() - started) / 60
        summary["spread"] = _seed_noise(chosen, done, args.noise_seeds, base, runs, out / "seed_noise.csv", left)
    if len(done) < len(chosen) or supernet is None:
        then = "run again to continue" if len(done) < len(chosen) else "rank them once the supernet is trained"
        print(f"{len(done)} of {len(chosen)} subnets trained alone; {then}", file=sys.stderr)
        print(json.dumps(summary))
        return 0
    evaluator = SubnetEvaluator.for_supernet(space, recipe, args.data_dir)
    rows = [
        {
            "subnet": str(s),
            "cpu_ms": round(latency(s), 4),
            "standalone_val_top1": done[str(s)],
            "inherited_val_top1": evaluator.top1(supernet, s),
        }
        for s in chosen
    ]
    a = [r["standalone_val_top1"] for r in rows]
    b = [r["inherited_val_top1"] for r in rows]
    lo, hi = bootstrap_tau(a, b)
    summary |= {"kendall_tau": round(kendall_tau(a, b), 4), "tau_95": [round(lo, 4), round(hi, 4)], "rows": rows}
    _plot(rows, summary, out / "ranking.png")
    atomic_write(out / "ranking.json", json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


def _seed_noise(
    chosen: list[Subnet],
    done: dict[str, float],
    seeds: int,
    base: TrainConfig,
    runs: Path,
    path: Path,
    left: float | None,
) -> dict:
    """The median-latency subnet retrained with seeds 1..``seeds`` (within ``left`` minutes), against the spread
    of the K subnets' accuracies: standard deviations in points."""
    subnet = str(chosen[len(chosen) // 2])
    rows = {0: done[subnet]}
    if path.is_file():
        with path.open() as f:
            rows |= {int(r["seed"]): float(r["standalone_val_top1"]) for r in csv.DictReader(f)}
    started = time.monotonic()
    for seed in range(1, seeds + 1):
        remaining = None if left is None else left - (time.monotonic() - started) / 60
        if seed in rows or (remaining is not None and remaining <= 0):
            continue
        arch_file = runs / "archs" / f"{subnet}.json"
        result = train(
            replace(
                base,
                arch=str(arch_file),
                out=str(runs / f"{subnet}-seed{seed}"),
                seed=seed,
                time_limit_minutes=remaining,
            )
        )
        if not result["finished"]:
            break
        rows[seed] = result["val_top1"]
        atomic_write(
            path, _csv([{"seed": k, "subnet": subnet, "standalone_val_top1": v} for k, v in sorted(rows.items())])
        )
    sd = lambda v: round(statistics.stdev(v) * 100, 3) if len(v) > 1 else None  # noqa: E731
    return {
        "subnet": subnet,
        "seed_val_top1": [rows[k] for k in sorted(rows)],
        "seed_sd_points": sd(list(rows.values())),
        "between_subnets_sd_points": sd([done[str(s)] for s in chosen]),
    }


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _plot(rows: list[dict], summary: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([r["standalone_val_top1"] * 100 for r in rows], [r["inherited_val_top1"] * 100 for r in rows])
    ax.set_xlabel(f"stand-alone val top-1 % ({summary['epochs']} epochs)")
    ax.set_ylabel("supernet-inherited val top-1 %")
    ax.set_title(
        f"Kendall tau {summary['kendall_tau']:.2f} (95% {summary['tau_95'][0]:.2f}..{summary['tau_95'][1]:.2f})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
