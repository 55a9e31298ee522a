"""Specialize a trained supernet for a latency table in minutes: ``proxyless search specialize``.

Evolutionary search (``evolution.py``) ranks subnets within the latency limit by the supernet's accuracy
predictor; the ``top`` best distinct subnets are then measured (inherited weights, BN recalibrated, validation
split held out from the training set) and the best of them is written as a zoo weights folder: arch spec,
extracted weights, metadata with the predicted latency, the estimated accuracy, the supernet's sha256 and the
command. ``create_model(folder)``, ``proxyless export`` and the demo take it as it is. ``--random`` runs random
search with the same number of predictor evaluations instead: the control.

``--finetune-min M`` then fine-tunes the chosen net for at most M minutes of wall clock (``finetune.py``;
``--teacher baseline`` distills from the space's zoo baseline): inherited weights alone are about a point short of
the baseline. The
folder is written whole at the end, so an interrupted run leaves none that loads as finished. Where the zoo has
the space's baseline, the net's test top-1 and its speed on the table are compared with it on one line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from search.elastic.evaluate import SubnetEvaluator
from search.elastic.evolution import EvolutionConfig, SearchResult, check_limit, evolve, random_search
from search.elastic.extract import save_subnet, subnet_net
from search.elastic.finetune import MAX_MINUTES, DataRecipe, FinetuneConfig, FinetuneResult, finetune
from search.elastic.latency import SubnetLatency
from search.elastic.predictor import encode, load_predictor
from search.elastic.space import BASELINE_MODELS, Subnet
from search.elastic.store import load_supernet, recipe_of, resolve_supernet
from search.latency.lut import MAX_MS, Lut
from search.latency.predict import TARGETS
from zoo.datasets import build_eval_dataset, get_dataset
from zoo.evaluate import evaluate, load_for_eval
from zoo.files import atomic_write, output_folder
from zoo.inputs import InputError, count, number
from zoo.options import DefaultsHelpFormatter, add_options, from_args, option
from zoo.registry import get_model_info, list_models


class SpecializeError(ValueError):
    """Arguments that cannot give a specialized net (checked before any expensive work)."""


# Upper bounds of the search: the defaults are 100 x 100 and 5; --population 1e8 ran 10 minutes to 3.7 GB.
MAX_POPULATION = 100_000
MAX_GENERATIONS = 10_000
MAX_EVALUATIONS = 10_000_000  # minutes of rejection sampling in Python
MAX_TOP = 100  # each is one validation pass
MAX_TARGET_MS = MAX_MS  # a table's own bound on a latency
MAX_FACTOR = 100.0  # x the baseline's latency: far above the largest subnet's


@dataclass(frozen=True)
class SpecializeConfig:
    """``proxyless search specialize``: each field one option (zoo.options), in --help's order."""

    lut: str = option(MISSING, f"latency table: one of {', '.join(TARGETS)} or a LUT file")
    out: str = option(MISSING, "weights folder to write (new or empty)")
    force: bool = option(False, "replace a non-empty --out folder", switch=True)
    supernet: str | None = option(None, "supernet folder or hf-hub:ORG/REPO[@REV] (default: the bundled one)")
    target_ms: float | None = option(None, "latency limit in the table's unit", exclusive="limit", required=True)
    factor: float | None = option(None, "latency limit as a fraction of the baseline subnet's", exclusive="limit")
    random: bool = option(False, "random search with the same evaluations (control)", switch=True)
    population: int = option(100, "evolution population")
    generations: int = option(100, "evolution generations")
    seed: int = option(0, "search seed")
    top: int = option(5, "best distinct subnets measured on the val split")
    data_dir: str | None = option(None, "dataset folder (validation and BN calibration images)")
    threads: int | None = option(None, "torch CPU threads")
    name: str | None = option(None, "the net's name (default: the --out folder's name)")
    finetune_min: float = option(
        0.0, "then fine-tune the chosen net for at most this many minutes of wall clock (0: inherited weights)"
    )
    teacher: str | None = option(  # None: no distillation; "baseline": the space's zoo baseline; else a model/folder
        None,
        "distill the fine-tune from this zoo model or weights folder, or 'baseline': the space's zoo baseline "
        "(e.g. fmnist_mobilenetv2) (default: none)",
    )
    finetune_lr: float = option(FinetuneConfig.lr, "peak fine-tune lr per 256 images")
    progress: bool = option(True, "no progress lines on stderr", flag="--no-progress", switch=True)

    def validate(self) -> None:
        """Every option in range and every input file readable, before the supernet is loaded."""
        if (self.target_ms is None) == (self.factor is None):
            raise SpecializeError("give exactly one of --target-ms (a latency) and --factor (x the baseline's)")
        try:
            self._check_numbers()
        except InputError as e:
            raise SpecializeError(str(e)) from None
        if not (math.isfinite(self.finetune_min) and 0 <= self.finetune_min <= MAX_MINUTES):
            raise SpecializeError(f"--finetune-min must be 0..{MAX_MINUTES:g} minutes, got {self.finetune_min}")
        if not (math.isfinite(self.finetune_lr) and self.finetune_lr > 0):
            raise SpecializeError(f"--finetune-lr must be finite and > 0, got {self.finetune_lr}")
        if self.lut not in TARGETS:
            if not os.path.lexists(self.lut):
                raise SpecializeError(f"--lut {self.lut!r} is neither one of {', '.join(TARGETS)} nor a LUT file")
            Lut.load(self.lut)  # the guarded reader: a FIFO, /dev/zero or a tampered table is one line now

    def _check_numbers(self) -> None:
        """The limit finite and > 0, the search sizes bounded (alone and as the evaluations they make)."""
        if self.target_ms is not None:
            number(self.target_ms, "--target-ms", 0.0, MAX_TARGET_MS, low_open=True)
        else:
            number(self.factor, "--factor", 0.0, MAX_FACTOR, low_open=True)
        count(self.population, "--population", 4, MAX_POPULATION)
        count(self.generations, "--generations", 0, MAX_GENERATIONS)
        count(self.top, "--top", 1, MAX_TOP)
        evaluations = self.population * (self.generations + 1)
        if evaluations > MAX_EVALUATIONS:
            raise InputError(
                f"--population x (--generations + 1) is {evaluations:,} predictor evaluations; "
                f"at most {MAX_EVALUATIONS:,} (the defaults make {100 * 101:,})"
            )
        if self.threads is not None:
            count(self.threads, "--threads", 1, 1024)


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
    test_top1: float | None = None
    baseline: str | None = None
    baseline_latency: float | None = None
    baseline_test_top1: float | None = None
    finetune: FinetuneResult | None = None

    def comparison(self) -> str | None:
        """The line a user wants: how much faster than the zoo baseline, and the accuracy delta on one split."""
        if self.baseline is None or self.test_top1 is None or self.baseline_test_top1 is None:
            return None
        delta = (self.test_top1 - self.baseline_test_top1) * 100
        return (
            f"vs {self.baseline}: {self.baseline_latency / self.latency:.2f}x faster on this table "
            f"({self.latency:.4g} vs {self.baseline_latency:.4g} {self.unit}), test top-1 {self.test_top1 * 100:.2f}% "
            f"vs {self.baseline_test_top1 * 100:.2f}% ({delta:+.2f} points, the same test images)"
        )


def _limit(cfg: SpecializeConfig, latency: SubnetLatency, baseline: Subnet) -> float:
    return cfg.target_ms if cfg.target_ms is not None else cfg.factor * latency(baseline)


def run_search(cfg: SpecializeConfig, space: Any, score: Any, latency: SubnetLatency, limit: float) -> SearchResult:
    evo = EvolutionConfig(population=cfg.population, generations=cfg.generations, seed=cfg.seed)
    if not cfg.random:
        return evolve(space, score, latency, limit, evo)
    n_parents = max(1, round(evo.parent_ratio * evo.population))
    evaluations = evo.population + evo.generations * (evo.population - n_parents)
    return random_search(space, score, latency, limit, evaluations, cfg.seed)


def _baseline(space: str, dataset: str) -> str | None:
    """The zoo's hand-designed net of ``space`` if it is registered and trained on ``dataset``."""
    name = BASELINE_MODELS.get(space)
    if name is None or name not in list_models() or get_model_info(name).dataset != dataset:
        return None
    return name


def _teacher(cfg: SpecializeConfig, baseline: str | None) -> str | None:
    """``--teacher``: none by default (docs/finetune.md, step 1), ``baseline`` for the space's zoo baseline."""
    if cfg.teacher in (None, "none"):
        return None
    if cfg.teacher == "baseline":
        if baseline is None:
            raise SpecializeError("--teacher baseline: the zoo has no trained baseline of this space and dataset")
        return baseline
    return cfg.teacher


def score_test_split(net: torch.nn.Module, dataset: str, data_dir: str | None) -> tuple[float, int]:
    """Top-1 (fraction) and image count of ``net`` on the dataset's whole test split."""
    spec = net.spec
    data = get_dataset(dataset)
    images = build_eval_dataset(dataset, "test", data_dir, spec.input_size, data.mean, data.std)
    result = evaluate(net.to(memory_format=torch.channels_last), images)
    return result.top1, result.n


def specialize(cfg: SpecializeConfig, command: str = "") -> Specialized:
    """Claim ``--out`` first (refused in one line when used or being written), search, and write the net into a
    temp folder that becomes ``--out`` only when it is complete."""
    cfg.validate()
    with output_folder(cfg.out, force=cfg.force) as tmp:
        return _specialize(cfg, command, tmp)


def _specialize(cfg: SpecializeConfig, command: str, out: Path) -> Specialized:
    started = time.monotonic()

    def say(line: str) -> None:
        if cfg.progress:
            print(f"[{time.monotonic() - started:5.0f} s] {line}", file=sys.stderr, flush=True)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    folder = resolve_supernet(cfg.supernet)
    supernet, meta = load_supernet(folder)
    recipe = recipe_of(meta, folder)
    space = supernet.space
    latency = SubnetLatency.load(space, cfg.lut)
    limit = _limit(cfg, latency, space.baseline())
    check_limit(space, latency, limit)
    baseline = _baseline(space.name, recipe["dataset"])
    teacher = _teacher(cfg, baseline) if cfg.finetune_min > 0 else None
    if teacher is not None and teacher not in list_models() and not Path(teacher).is_dir():
        raise SpecializeError(f"--teacher {teacher!r} is neither a zoo model nor a weights folder")
    found = load_predictor(space, folder, meta["weights_sha256"])
    if found is None:
        raise SpecializeError(
            f"{folder} has no accuracy predictor: fit one with `proxyless search elastic-predictor --supernet {folder}`"
        )
    predictor, _ = found

    def score(subnets: list[Subnet]) -> list[float]:
        with torch.no_grad():
            return predictor(encode(space, subnets)).tolist()

    say(
        f"supernet {folder} ({torch.get_num_threads()} threads): searching ({'random' if cfg.random else 'evolution'}, "
        f"population {cfg.population}, {cfg.generations} generations) under {limit:.4g} {latency.unit}"
    )
    result = run_search(cfg, space, score, latency, limit)
    shortlist: list = []
    for cand in result.population:
        if cand.subnet not in [c.subnet for c in shortlist]:
            shortlist.append(cand)
        if len(shortlist) == cfg.top:
            break
    say(f"measuring the {len(shortlist)} best candidates on {recipe['val_size']} validation images")
    evaluator = SubnetEvaluator.for_supernet(space, recipe, cfg.data_dir)
    tick = time.monotonic()
    measured = [(evaluator.top1(supernet, c.subnet), c) for c in shortlist]
    val_seconds = (time.monotonic() - tick) / len(shortlist)
    val_top1, best = max(measured, key=lambda m: (m[0], m[1].score))
    net = subnet_net(supernet, best.subnet, evaluator, cfg.name or Path(cfg.out).name)
    tuned = None
    if cfg.finetune_min > 0:
        say(f"fine-tuning {best.subnet} for at most {cfg.finetune_min:g} min")
        tune = FinetuneConfig(
            minutes=cfg.finetune_min,
            teacher=teacher,
            lr=cfg.finetune_lr,
            batch_size=recipe["batch_size"],
            reserve_s=2 * val_seconds,  # the final validation pass, with room for a slower machine
            progress=cfg.progress,
        )
        tuned = finetune(net, tune, DataRecipe.of(recipe, cfg.data_dir), log=say)
    say("scoring the net" + (f" and {baseline}" if baseline else "") + " on the test split")
    top1_test, n_test = score_test_split(net, recipe["dataset"], cfg.data_dir)
    baseline_top1 = None
    if baseline:
        baseline_top1 = score_test_split(load_for_eval(baseline)[0], recipe["dataset"], cfg.data_dir)[0]
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
        test_top1=top1_test,
        baseline=baseline,
        baseline_latency=round(latency(space.baseline()), 4) if baseline else None,
        baseline_test_top1=baseline_top1,
        finetune=tuned,
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
        "top1": top1_test,
        "source": f"{n_test} {recipe['dataset']} test images (the net chosen on the validation split)",
        "val_top1_inherited": val_top1,
        **({"val_top1": tuned.val_top1} if tuned else {}),
        "predicted_top1": round(best.score, 4),
        "latency_ms" if latency.unit == "ms" else "latency": {f"{cfg.lut}_pred": round(best.latency, 4)},
        "specialize": specialize_record,
    }
    how = f"{record.search}, {cfg.lut} <= {limit:.4g} {latency.unit}"
    training = tuned.describe() if tuned else "not fine-tuned"
    save_subnet(net, meta, best.subnet, out, metrics, how, training)
    atomic_write(out / "specialize.json", json.dumps(specialize_record, indent=1, allow_nan=False) + "\n")
    return record


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "specialize",
        help="specialize a trained elastic supernet for a latency table in minutes (no training)",
        description="Evolutionary search over a trained supernet under a latency limit; writes a zoo weights "
        "folder. The last line is JSON.",
        formatter_class=DefaultsHelpFormatter,
    )
    add_options(p, SpecializeConfig)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = from_args(SpecializeConfig, args)
    command = "proxyless search " + shlex.join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    record = specialize(cfg, command)
    tuned = record.finetune
    val = f"inherited val top-1 {record.val_top1 * 100:.2f}% (predicted {record.predicted_top1 * 100:.2f}%)"
    if tuned:
        val += f", after {tuned.steps} fine-tune steps {tuned.val_top1 * 100:.2f}%"
    print(
        f"wrote {record.out}: {record.subnet}, {record.latency:.4g} {record.unit} (limit {record.limit:.4g}), "
        f"{val} on the validation split; test top-1 {record.test_top1 * 100:.2f}%; {record.seconds} s"
    )
    if record.comparison():
        print(record.comparison())
    print(json.dumps(asdict(record)))
    return 0
