"""Measure supernet-inherited accuracies of sampled subnets and fit the accuracy predictor on them:
``proxyless search elastic-predictor``.

Subnets are drawn uniformly from the space (seeded), plus the largest, the smallest and the baseline. Each one's
inherited validation accuracy is appended to ``OUT/subnet_accuracy.csv`` as soon as it is measured, so a stopped
run continues where it was. The predictor is then fit (80/20 split of the subnets) and saved beside the supernet
(or into ``--out``); its held-out RMSE and Kendall tau are printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from search.elastic.evaluate import SubnetEvaluator
from search.elastic.extract import parse_subnet
from search.elastic.predictor import fit_predictor, save_predictor
from search.elastic.space import ElasticSpace, Subnet
from search.elastic.store import load_supernet, resolve_supernet
from search.elastic.supernet import ElasticSupernet

CSV = "subnet_accuracy.csv"


def subnets_to_measure(space: ElasticSpace, count: int, seed: int) -> list[Subnet]:
    rng = random.Random(seed)
    fixed = [space.largest(), space.smallest(), space.baseline()]
    drawn = [space.sample(rng) for _ in range(max(0, count - len(fixed)))]
    return list(dict.fromkeys(fixed + drawn))


def measure(
    supernet: ElasticSupernet, evaluator: SubnetEvaluator, subnets: list[Subnet], csv_path: Path, progress: bool = True
) -> dict[Subnet, float]:
    """Inherited val top-1 of each subnet, reusing (and appending to) ``csv_path``."""
    space = supernet.space
    done: dict[Subnet, float] = {}
    if csv_path.is_file():
        with csv_path.open() as f:
            done = {parse_subnet(space, r["subnet"]): float(r["val_top1"]) for r in csv.DictReader(f)}
    todo = [s for s in subnets if s not in done]
    new = not csv_path.is_file()
    with csv_path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["subnet", "val_top1"])
        for s in tqdm(todo, desc="subnets", disable=not progress, dynamic_ncols=True):
            done[s] = evaluator.top1(supernet, s)
            writer.writerow([str(s), done[s]])
            f.flush()
    return {s: done[s] for s in subnets}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "elastic-predictor",
        help="measure sampled subnets' inherited accuracy and fit the accuracy predictor (resumable)",
        description="The last line is JSON: the predictor's held-out RMSE and Kendall tau.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--supernet", help="supernet folder or hf-hub:ORG/REPO[@REV] (default: the bundled one)")
    p.add_argument("--out", help="where the CSV and the predictor go (default: the supernet folder)")
    p.add_argument("--subnets", type=int, default=400, help="subnets to measure (largest, smallest, baseline first)")
    p.add_argument("--seed", type=int, default=0, help="subnet draws and the predictor's split")
    p.add_argument("--val-limit", type=int, help="score on the first N validation images only (quick runs)")
    p.add_argument("--data-dir", help="dataset folder")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.subnets < 10:
        raise ValueError(f"--subnets must be >= 10 (the predictor holds out 20% of them), got {args.subnets}")
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = resolve_supernet(args.supernet)
    supernet, meta = load_supernet(folder)
    out = Path(args.out) if args.out else folder
    out.mkdir(parents=True, exist_ok=True)
    evaluator = SubnetEvaluator.for_supernet(supernet.space, meta["metadata"]["recipe"], args.data_dir, args.val_limit)
    subnets = subnets_to_measure(supernet.space, args.subnets, args.seed)
    accuracy = measure(supernet, evaluator, subnets, out / CSV, args.progress)
    model, fit = fit_predictor(supernet.space, list(accuracy), list(accuracy.values()), seed=args.seed)
    save_predictor(model, fit, out, {"supernet_sha256": meta["weights_sha256"], "subnets_csv": CSV})
    print(f"predictor: held-out RMSE {fit.rmse * 100:.3f} points, Kendall tau {fit.kendall_tau:.3f}")
    print(json.dumps(asdict(fit)))
    return 0
