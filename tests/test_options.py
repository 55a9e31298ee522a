"""Command-line options derived from config dataclasses (zoo.options): each setting declared once."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from export.bench import BenchOptions
from export.cli import build_parser
from export.pipeline import ExportOptions
from zoo.options import add_options, from_args, option


@dataclass
class Config:
    name: str = option("a", "a name", choices=("a", "b"))
    count: int = option(3, "how many")
    ratio: float = option(0.5, "a fraction")
    flag: bool = option(True, "on or off")
    sizes: tuple[int, ...] = option((1, 8), "batch sizes")
    folder: Path | None = option(None, "a folder")
    internal: int = 7  # no help: not an option


def parse(argv: list[str]) -> Config:
    p = argparse.ArgumentParser()
    add_options(p, Config)
    return from_args(Config, p.parse_args(argv))


def test_defaults_round_trip_and_every_kind_parses():
    assert parse([]) == Config()
    got = parse(["--name", "b", "--count", "5", "--ratio", "0.25", "--no-flag", "--sizes", "2,4", "--folder", "d"])
    assert got == Config("b", 5, 0.25, False, (2, 4), Path("d"))
    with pytest.raises(SystemExit):
        parse(["--name", "c"])  # choices come from the field
    with pytest.raises(SystemExit):
        parse(["--internal", "1"])  # a field without help is no option


def test_export_and_bench_options_are_their_dataclasses_fields():
    """Every ExportOptions / BenchOptions setting is an option of the CLI with the dataclass's default."""
    p = build_parser()
    run = p.parse_args(["run", "SRC", "--out", "o"])
    bench = p.parse_args(["bench", "M", "--out", "o"])
    for cls, args, skip in ((ExportOptions, run, {"formats", "log"}), (BenchOptions, bench, set())):
        for f in dataclasses.fields(cls):
            if f.name not in skip:
                assert getattr(args, f.name) == f.default, (cls.__name__, f.name)


def test_train_options_are_train_config():
    """`proxyless search train` is TrainConfig: defaults, required fields, a renamed flag and a bare --amp."""
    from search.training.train import TrainConfig, add_parser

    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers())
    args = p.parse_args(["train", "--arch", "a.json", "--out", "run"])
    assert from_args(TrainConfig, args) == TrainConfig(arch="a.json", out="run")
    args = p.parse_args(["train", "--arch", "a", "--out", "o", "--amp", "--time-limit", "5", "--no-flip"])
    assert from_args(TrainConfig, args) == TrainConfig("a", "o", amp="bf16", time_limit_minutes=5.0, flip=False)
    with pytest.raises(SystemExit):
        p.parse_args(["train", "--out", "o"])  # --arch is required
