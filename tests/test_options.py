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


NAMES = ["x", "y"]  # a registry's names: read when the parser is built, not when the class is defined


@dataclass(frozen=True)
class Command:
    sources: tuple[str, ...] = option(dataclasses.MISSING, "inputs", positional=True, nargs="+")
    repo_id: str = option(dataclasses.MISSING, "where", flag=("--repo-id", "--repo"))
    force: bool = option(False, "replace", switch=True)
    progress: bool = option(True, "no progress lines", flag="--no-progress", switch=True)
    report: tuple[str, ...] = option((), "a report (repeatable)", repeat=True, metavar="FILE")
    target_ms: float | None = option(None, "a latency", exclusive="limit", required=True)
    factor: float | None = option(None, "a fraction", exclusive="limit")
    runtime: str = option("x", "a registered name", choices=lambda: NAMES)


def command_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cmd")
    add_options(p, Command)
    return p


def test_positionals_switches_aliases_repeats_and_groups_parse_back_into_the_dataclass():
    got = from_args(Command, command_parser().parse_args(["a", "b", "--repo", "o/r", "--factor", "0.5"]))
    assert got == Command(("a", "b"), "o/r", factor=0.5)
    argv = ["a", "--repo-id", "o/r", "--force", "--no-progress", "--report", "1", "--report", "2", "--target-ms", "3"]
    got = from_args(Command, command_parser().parse_args(argv))
    assert (got.force, got.progress, got.report, got.target_ms) == (True, False, ("1", "2"), 3.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["a", "--repo", "o/r"],  # the group is required
        ["a", "--repo", "o/r", "--factor", "1", "--target-ms", "2"],  # one of the group, not two
        ["--repo", "o/r", "--factor", "1"],  # the positional is required
        ["a", "--factor", "1"],  # --repo-id is required
        ["a", "--repo", "o/r", "--factor", "1", "--force", "yes"],  # a switch takes no value
    ],
)
def test_what_the_declaration_forbids_is_refused(argv, capsys):
    with pytest.raises(SystemExit):
        command_parser().parse_args(argv)
    assert "error:" in capsys.readouterr().err


def test_choices_from_a_function_are_the_registry_at_parser_time():
    NAMES.append("z")
    try:
        assert command_parser().parse_args(["a", "--repo", "r", "--factor", "1", "--runtime", "z"]).runtime == "z"
    finally:
        NAMES.remove("z")
    with pytest.raises(SystemExit):
        command_parser().parse_args(["a", "--repo", "r", "--factor", "1", "--runtime", "z"])


def test_help_shows_defaults_once_and_none_for_switches():
    from zoo.options import DefaultsHelpFormatter

    p = argparse.ArgumentParser(prog="cmd", formatter_class=DefaultsHelpFormatter)
    add_options(p, Command)
    add_options(p, Config, skip=("flag",))
    text = " ".join(p.format_help().split())
    assert "how many (default 3)" in text and "default: 3" not in text
    assert "no progress lines" in text and "True" not in text  # --no-progress says what it does without a default


def test_every_subcommand_of_every_cli_declares_its_options_through_dataclasses():
    """No hand-written add_argument left in the four packages: a new option is one field (issue 38)."""
    import re

    root = Path(__file__).resolve().parents[1]
    found = [
        f"{path.relative_to(root)}:{n}"
        for package in ("zoo", "search", "export", "demo")
        for path in (root / package).rglob("*.py")
        if path.name != "options.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\.add_argument\(", line)
    ]
    assert not found, found


def test_non_finite_names_the_first_nan_or_inf_option_by_its_flag():
    from zoo.options import non_finite

    assert non_finite(Config()) is None
    assert non_finite(Config(ratio=float("nan"))) == "--ratio must be finite, got nan"
    assert non_finite(Config(ratio=float("-inf"))) == "--ratio must be finite, got -inf"
    assert non_finite(dataclasses.replace(Config(), internal=float("nan"))) is None  # not an option: not the user's
