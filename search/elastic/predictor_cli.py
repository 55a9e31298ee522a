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
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from search.elastic.evaluate import SubnetEvaluator
from search.elastic.extract import parse_subnet
from search.elastic.predictor import fit_predictor, save_predictor
from search.elastic.space import ElasticSpace, Subnet
from search.elastic.store import load_supernet, recipe_of, resolve_supernet
from search.elastic.supernet import ElasticSupernet
from zoo.inputs import InputError, count, csv_stream, number
from zoo.options import DefaultsHelpFormatter, add_options, option

CSV = "subnet_accuracy.csv"
MAX_SUBNETS = 100_000  # each is one validation pass: 400 is the default, 100k already days of CPU


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
    new = not os.path.lexists(csv_path)
    done = {} if new else read_measured(space, csv_path)
    todo = [s for s in subnets if s not in done]
    with csv_path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["subnet", "val_top1"])
        for s in tqdm(todo, desc="subnets", disable=not progress, dynamic_ncols=True):
            done[s] = evaluator.top1(supernet, s)
            writer.writerow([str(s), done[s]])
            f.flush()
    return {s: done[s] for s in subnets}


def read_measured(space: ElasticSpace, csv_path: Path) -> dict[Subnet, float]:
    """The subnets measured so far, through the guarded reader: a row that is not a subnet of ``space`` with an
    accuracy in [0, 1] is refused naming its line (a NaN row would fit a predictor whose RMSE is NaN)."""
    rows = csv.reader(csv_stream(csv_path, "the subnet,val_top1 CSV that elastic-predictor writes"))
    if next(rows, None) != ["subnet", "val_top1"]:
        raise InputError(f"{csv_path}: line 1 is not the header subnet,val_top1")
    done: dict[Subnet, float] = {}
    for line, row in enumerate(rows, 2):
        if not row:
            continue
        try:
            if len(row) != 2:
                raise ValueError(f"{len(row)} fields, expected 2")
            done[parse_subnet(space, row[0])] = number(float(row[1]), "val_top1", 0.0, 1.0)
        except ValueError as e:
            raise InputError(f"{csv_path}: line {line}: {e}") from None
    return done


@dataclass(frozen=True)
class PredictorOptions:
    """``proxyless search elastic-predictor``: each field one option (zoo.options)."""

    supernet: str | None = option(None, "supernet folder or hf-hub:ORG/REPO[@REV] (default: the bundled one)")
    out: str | None = option(None, "where the CSV and the predictor go (default: the supernet folder)")
    subnets: int = option(400, "subnets to measure (largest, smallest, baseline first)")
    seed: int = option(0, "subnet draws and the predictor's split")
    val_limit: int | None = option(None, "score on the first N validation images only (quick runs)")
    data_dir: str | None = option(None, "dataset folder")
    threads: int | None = option(None, "torch CPU threads")
    progress: bool = option(True, "tqdm bar")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "elastic-predictor",
        help="measure sampled subnets' inherited accuracy and fit the accuracy predictor (resumable)",
        description="The last line is JSON: the predictor's held-out RMSE and Kendall tau.",
        formatter_class=DefaultsHelpFormatter,
    )
    add_options(p, PredictorOptions)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.subnets < 10:
        raise ValueError(f"--subnets must be >= 10 (the predictor holds out 20% of them), got {args.subnets}")
    count(args.subnets, "--subnets", 10, MAX_SUBNETS)
    if args.val_limit is not None:
        count(args.val_limit, "--val-limit", 1, 10**8)
    if args.threads is not None:
        count(args.threads, "--threads", 1, 1024)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = resolve_supernet(args.supernet)
    supernet, meta = load_supernet(folder)
    out = Path(args.out) if args.out else folder
    out.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(out / CSV):  # a bad row is refused before the dataset is loaded
        read_measured(supernet.space, out / CSV)
    evaluator = SubnetEvaluator.for_supernet(supernet.space, recipe_of(meta, folder), args.data_dir, args.val_limit)
    subnets = subnets_to_measure(supernet.space, args.subnets, args.seed)
    accuracy = measure(supernet, evaluator, subnets, out / CSV, args.progress)
    model, fit = fit_predictor(supernet.space, list(accuracy), list(accuracy.values()), seed=args.seed)
    save_predictor(model, fit, out, {"supernet_sha256": meta["weights_sha256"], "subnets_csv": CSV})
    print(f"predictor: held-out RMSE {fit.rmse * 100:.3f} points, Kendall tau {fit.kendall_tau:.3f}")
    print(json.dumps(asdict(fit)))
    return 0
