"""Specialize a trained supernet for a latency table in minutes: ``proxyless search specialize``.

Evolutionary search (``evolution.py``) ranks subnets within the latency limit by the supernet's accuracy
predictor; the ``top`` best distinct subnets are then measured (inherited weights, BN recalibrated, validation
split held out from the training set) and the best of them is written as a zoo weights folder: arch spec,
extracted weights, metadata with the predicted latency, the estimated accuracy, the supernet's sha256 and the
command. ``create_model(folder)``, ``proxyless export`` and the demo take it as it is. ``--random`` runs random
search with the same number of predictor evaluations instead: the control.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from search.elastic.evaluate import SubnetEvaluator
from search.elastic.evolution import EvolutionConfig, SearchResult, evolve, random_search
from search.elastic.extract import write_subnet
from search.elastic.latency import SubnetLatency
from search.elastic.predictor import encode, load_predictor
from search.elastic.space import Subnet
from search.elastic.store import load_supernet, resolve_supernet
from search.latency.predict import TARGETS
from zoo.files import atomic_write


class SpecializeError(ValueError):
    """Arguments that cannot give a specialized net (checked before any expensive work)."""


@dataclass(frozen=True)
class SpecializeConfig:
    lut: str
    out: str
    supernet: str | None = None
    target_ms: float | None = None
    factor: float | None = None
    random: bool = False
    population: int = 100
    generations: int = 100
    seed: int = 0
    top: int = 5
    data_dir: str | None = None
    threads: int | None = None
    name: str | None = None

    def validate(self) -> None:
        if (self.target_ms is None) == (self.factor is None):
            raise SpecializeError("give exactly one of --target-ms (a latency) and --factor (x the baseline's)")
        limit = self.target_ms if self.target_ms is not None else self.factor
        if not limit or limit <= 0:
            raise SpecializeError(f"the latency target must be > 0, got {limit}")
        if self.population < 4 or self.generations < 0 or self.top < 1:
            raise SpecializeError("--population must be >= 4, --generations >= 0, --top >= 1")
        out = Path(self.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise SpecializeError(f"--out {out} exists and is not an empty folder; choose another")
        if self.lut not in TARGETS and not Path(self.lut).is_file():
            raise SpecializeError(f"--lut {self.lut!r} is neither one of {', '.join(TARGETS)} nor a LUT file")


@dataclass(frozen=True)
class Specialized:
    """What ``specialize`` made: the net, its latency under the table, its estimated accuracies."""

    subnet: str
    latency: float
    unit: str
    limit: float
    predicted_top1: float
    val_top1: float
    search: str
    evaluations: int
    search_seconds: float
    seconds: float
    out: str


def _limit(cfg: SpecializeConfig, latency: SubnetLatency, baseline: Subnet) -> float:
    return cfg.target_ms if cfg.target_ms is not None else cfg.factor * latency(baseline)


def run_search(cfg: SpecializeConfig, space: Any, score: Any, latency: SubnetLatency, limit: float) -> SearchResult:
    evo = EvolutionConfig(population=cfg.population, generations=cfg.generations, seed=cfg.seed)
    if not cfg.random:
        return evolve(space, score, latency, limit, evo)
    n_parents = max(1, round(evo.parent_ratio * evo.population))
    evaluations = evo.population + evo.generations * (evo.population - n_parents)
    return random_search(space, score, latency, limit, evaluations, cfg.seed)


def specialize(cfg: SpecializeConfig, command: str = "") -> Specialized:
    cfg.validate()
    started = time.monotonic()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    folder = resolve_supernet(cfg.supernet)
    supernet, meta = load_supernet(folder)
    space = supernet.space
    latency = SubnetLatency.load(space, cfg.lut)
    limit = _limit(cfg, latency, space.baseline())
    found = load_predictor(space, folder)
    if found is None:
        raise SpecializeError(
            f"{folder} has no accuracy predictor: fit one with `proxyless search elastic-predictor --supernet {folder}`"
        )
    predictor, _ = found

    def score(subnets: list[Subnet]) -> list[float]:
        with torch.no_grad():
            return predictor(encode(space, subnets)).tolist()

    result = run_search(cfg, space, score, latency, limit)
    shortlist: list = []
    for cand in result.population:
        if cand.subnet not in [c.subnet for c in shortlist]:
            shortlist.append(cand)
        if len(shortlist) == cfg.top:
            break
    evaluator = SubnetEvaluator.for_supernet(space, meta["metadata"]["recipe"], cfg.data_dir)
    measured = [(evaluator.top1(supernet, c.subnet), c) for c in shortlist]
    val_top1, best = max(measured, key=lambda m: (m[0], m[1].score))
    record = Specialized(
        subnet=str(best.subnet),
        latency=round(best.latency, 4),
        unit=latency.unit,
        limit=round(limit, 4),
        predicted_top1=round(best.score, 4),
        val_top1=val_top1,
        search="random" if cfg.random else "evolution",
        evaluations=result.evaluations,
        search_seconds=round(result.seconds, 2),
        seconds=round(time.monotonic() - started, 1),
        out=cfg.out,
    )
    specialize_record = {
        **asdict(record),
        "lut": cfg.lut,
        "supernet": str(cfg.supernet or folder),
        "supernet_sha256": meta["weights_sha256"],
        "shortlist": [
            {"subnet": str(c.subnet), "predicted": round(c.score, 4), "val_top1": v, "latency": round(c.latency, 4)}
            for v, c in measured
        ],
        "best_per_generation": [round(v, 4) for v in result.best_per_generation],
        "command": command,
    }
    metrics = {
        "val_top1_inherited": val_top1,
        "predicted_top1": round(best.score, 4),
        "latency_ms" if latency.unit == "ms" else "latency": {f"{cfg.lut}_pred": round(best.latency, 4)},
        "specialize": specialize_record,
    }
    how = f"{record.search}, {cfg.lut} <= {limit:.4g} {latency.unit}"
    write_subnet(supernet, meta, best.subnet, evaluator, cfg.out, cfg.name or Path(cfg.out).name, metrics, how)
    atomic_write(Path(cfg.out) / "specialize.json", json.dumps(specialize_record, indent=1) + "\n")
    return record


def add_parser(subparsers: Any) -> None:
    d = SpecializeConfig(lut="", out="")
    p = subparsers.add_parser(
        "specialize",
        help="specialize a trained elastic supernet for a latency table in minutes (no training)",
        description="Evolutionary search over a trained supernet under a latency limit; writes a zoo weights "
        "folder. The last line is JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--lut", required=True, help=f"latency table: one of {', '.join(TARGETS)} or a LUT file")
    p.add_argument("--out", required=True, help="weights folder to write (new or empty)")
    p.add_argument("--supernet", help="supernet folder or hf-hub:ORG/REPO[@REV] (default: the bundled one)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--target-ms", type=float, help="latency limit in the table's unit")
    group.add_argument("--factor", type=float, help="latency limit as a fraction of the baseline subnet's")
    p.add_argument("--random", action="store_true", help="random search with the same evaluations (control)")
    p.add_argument("--population", type=int, default=d.population, help="evolution population")
    p.add_argument("--generations", type=int, default=d.generations, help="evolution generations")
    p.add_argument("--seed", type=int, default=d.seed, help="search seed")
    p.add_argument("--top", type=int, default=d.top, help="best distinct subnets measured on the val split")
    p.add_argument("--data-dir", help="dataset folder (validation and BN calibration images)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--name", help="the net's name (default: the --out folder's name)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = SpecializeConfig(**{k: getattr(args, k) for k in SpecializeConfig.__dataclass_fields__})
    command = "proxyless search " + shlex.join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    record = specialize(cfg, command)
    print(
        f"wrote {record.out}: {record.subnet}, {record.latency:.4g} {record.unit} (limit {record.limit:.4g}), "
        f"val top-1 {record.val_top1 * 100:.2f}% (predicted {record.predicted_top1 * 100:.2f}%), {record.seconds} s"
    )
    print(json.dumps(asdict(record)))
    return 0
