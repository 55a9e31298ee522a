"""``proxyless search compare RUN...``: did searches for different hardware specialize?

For the derived nets of several searches (their ``arch.json``): each net's predicted latency on every search's
latency model, whether each net is the fastest on its own model, and per pair the number of searchable layers
in which the two nets differ. Nets that would have come out of any table are not specialized.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path

from search.latency import load_latency_model
from search.space import get_space
from zoo.arch import ArchSpec
from zoo.files import atomic_write
from zoo.options import add_options, option


@dataclass(frozen=True)
class NetOnTables:
    """One search's derived net: its latency on every compared search's model (by search name)."""

    name: str
    model: str  # the latency model it was searched for
    target_latency: float
    layers: list[str]  # the searchable layers' choices
    latency: dict[str, float]
    fastest_on_own_table: bool


@dataclass(frozen=True)
class PairDiff:
    a: str
    b: str
    differing_layers: int


@dataclass(frozen=True)
class Comparison:
    layers: int  # searchable layers per net
    nets: list[NetOnTables]
    pairs: list[PairDiff]


def _load(run: Path) -> tuple[ArchSpec, dict]:
    arch = ArchSpec.from_json((run / "arch.json").read_text())
    record = arch.extra.get("search")
    if not record:
        raise ValueError(f"{run / 'arch.json'} has no search record (extra.search): not a search's derived net")
    return arch, record


def compare_runs(runs: dict[str, Path]) -> Comparison:
    """Compare the derived nets of ``runs`` (search name -> run folder); every run must be of one space."""
    loaded = {name: _load(run) for name, run in runs.items()}
    spaces = {record["config"]["space"] for _, record in loaded.values()}
    if len(spaces) != 1:
        raise ValueError(f"the runs searched different spaces ({', '.join(sorted(spaces))}): nothing to compare")
    space = get_space(spaces.pop())
    models = {name: load_latency_model(record["target"], space) for name, (_, record) in loaded.items()}
    choices = {name: [str(b) for b in space.choices_of(arch)] for name, (arch, _) in loaded.items()}
    latency = {
        name: {table: model.predict_arch(arch).total_ms for table, model in models.items()}
        for name, (arch, _) in loaded.items()
    }
    nets = [
        NetOnTables(
            name,
            record["target"],
            record["target_latency"],
            choices[name],
            latency[name],
            all(latency[name][name] <= latency[other][name] for other in loaded),
        )
        for name, (_, record) in loaded.items()
    ]
    pairs = [
        PairDiff(a, b, sum(x != y for x, y in zip(choices[a], choices[b], strict=True)))
        for a, b in itertools.combinations(loaded, 2)
    ]
    return Comparison(len(space.layers()), nets, pairs)


@dataclass(frozen=True)
class CompareOptions:
    runs: tuple[str, ...] = option(
        MISSING, "search run folders (each with arch.json); named by folder name", positional=True, nargs="+"
    )
    out: str | None = option(None, "also write the comparison here (JSON)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="the derived nets of several searches on each other's latency models")
    add_options(p, CompareOptions)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    runs = {Path(r).name: Path(r) for r in args.runs}
    if len(runs) != len(args.runs):
        raise ValueError("two runs share a folder name: name them apart")
    text = json.dumps(asdict(compare_runs(runs)), indent=1)
    if args.out:
        atomic_write(Path(args.out), text + "\n")
    print(text)
    return 0
