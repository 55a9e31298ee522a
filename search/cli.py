"""``proxyless search ...``: each area registers its subcommands with one ``add_parsers(subparsers)`` call.

A subcommand sets ``func(args) -> int``; a ValueError (our errors subclass it) or an OSError (a read-only or full
folder) becomes one ``error: ...`` line, exit 2.
"""

from __future__ import annotations

import argparse
import sys

from search.elastic.cli import add_parsers as add_elastic_parsers
from search.gradient.cli import add_parsers as add_search_parsers
from search.latency.cli import add_parsers as add_latency_parsers
from search.training.train import add_parser as add_train_parser
from zoo.files import describe_os_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxyless search", description="search spaces, latency tables, architecture search, training"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_latency_parsers(subparsers)
    add_search_parsers(subparsers)
    add_train_parser(subparsers)
    add_elastic_parsers(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename}: {describe_os_error(e)}" if e.filename else f"error: {e}", file=sys.stderr)
        return 2
