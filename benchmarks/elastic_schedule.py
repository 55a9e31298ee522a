"""Sandwich rule or progressive shrinking: which training schedule ranks subnets better on a short run?

Two supernets of the same space train with one short recipe (``--epochs`` on a class-balanced ``--limit-train``
subset, seed 0, every other setting the default of ``proxyless search elastic-train``), differing only in
``--schedule``. Each then scores the subnets of the ranking benchmark that have been trained alone
(``RANKING/subnets.json`` and ``RANKING/standalone.csv``: 4 epochs each on the full training split) with inherited
weights, BN recalibrated, on the same 5,000 held-out validation images; Kendall tau against the stand-alone
accuracies, with a bootstrap interval, says which ranks better. The protocol and its decision rule are in
docs/elastic.md ("Which schedule"). Resumable: each training lives in RUNS/<schedule>/ (large, not kept);
``--budget-min`` stops the running one checkpointed. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.elastic_ranking import trained_alone
from search.elastic.evaluate import SubnetEvaluator
from search.elastic.extract import parse_subnet
from search.elastic.store import load_supernet
from search.elastic.train import SCHEDULES, ElasticTrainConfig, train_supernet
from search.training.stats import bootstrap_tau, kendall_tau
from zoo.files import atomic_write


def _standalone(ranking: Path) -> dict[str, float]:
    """Stand-alone validation top-1 of the pinned subnets trained so far, in the pinned order."""
    pinned = json.loads((ranking / "subnets.json").read_text())
    done = trained_alone(ranking / "standalone.csv")
    return {name: done[name] for name in pinned if name in done}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="fmnist", help="elastic space")
    p.add_argument("--epochs", type=int, default=4, help="epochs of each short run (cosine)")
    p.add_argument("--limit-train", type=int, default=20000, help="class-balanced training subset of each run")
    p.add_argument("--ranking", default="benchmarks/results/elastic_ranking", help="the ranking benchmark's results")
    p.add_argument("--runs", default="runs/elastic_schedule", help="the two trainings (resumable, large)")
    p.add_argument("--out", default="benchmarks/results/elastic_schedule", help="results (small JSON)")
    p.add_argument("--budget-min", type=float, help="stop (checkpointed) after this many minutes of training")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--data-dir", help="dataset folder")
    p.add_argument("--dataset", default="fashion-mnist", help="training data (synthetic: smoke runs)")
    p.add_argument("--val-size", type=int, default=5000, help="held-out validation images (as the ranking's)")
    p.add_argument("--calib-images", type=int, default=2000, help="BN recalibration images")
    args = p.parse_args()
    ranking = Path(args.ranking)
    if not (ranking / "subnets.json").is_file() or not (ranking / "standalone.csv").is_file():
        raise SystemExit(f"{ranking}: no subnets.json + standalone.csv; run benchmarks/elastic_ranking.py first")
    standalone = _standalone(ranking)
    if len(standalone) < 4:
        raise SystemExit(f"{ranking}: {len(standalone)} subnets trained alone; a ranking needs at least 4")
    runs, out = Path(args.runs), Path(args.out)
    started, summary = time.monotonic(), {"epochs": args.epochs, "limit_train": args.limit_train, "runs": {}}
    for schedule in SCHEDULES:
        run = runs / schedule
        if (run / "supernet.json").is_file():
            continue
        left = None if args.budget_min is None else args.budget_min - (time.monotonic() - started) / 60
        if left is not None and left <= 0:
            break
        config = ElasticTrainConfig(
            out=str(run),
            space=args.space,
            dataset=args.dataset,
            data_dir=args.data_dir,
            epochs=args.epochs,
            limit_train=args.limit_train,
            val_size=args.val_size,
            calib_images=args.calib_images,
            schedule=schedule,
            threads=args.threads,
            resume=(run / "checkpoint.pt").is_file(),
            time_limit_minutes=left,
            eval_every=args.epochs,
        )
        if not train_supernet(config)["finished"]:
            break
    pending = [s for s in SCHEDULES if not (runs / s / "supernet.json").is_file()]
    if pending:
        print(f"not yet trained: {', '.join(pending)}; run again to continue", file=sys.stderr)
        print(json.dumps(summary | {"pending": pending}))
        return 0
    names, a = list(standalone), list(standalone.values())
    for schedule in SCHEDULES:
        supernet, meta = load_supernet(runs / schedule)
        recipe = meta["metadata"]["recipe"]
        evaluator = SubnetEvaluator.for_supernet(supernet.space, recipe, args.data_dir)
        b = [evaluator.top1(supernet, parse_subnet(supernet.space, n)) for n in names]
        lo, hi = bootstrap_tau(a, b)
        summary["runs"][schedule] = {
            "kendall_tau": round(kendall_tau(a, b), 4),
            "tau_95": [round(lo, 4), round(hi, 4)],
            "mean_inherited_val_top1": round(sum(b) / len(b), 4),
            "train_seconds": meta["metadata"]["validation"]["train_seconds"],
            "inherited_val_top1": dict(zip(names, [round(x, 4) for x in b], strict=True)),
        }
    summary["subnets"] = len(names)
    summary["ranks_better"] = max(SCHEDULES, key=lambda s: summary["runs"][s]["kendall_tau"])
    atomic_write(out / "schedule.json", json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
