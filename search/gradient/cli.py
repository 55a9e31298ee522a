"""``proxyless search warmup|run|compare``: the gradient search's subcommands. ``run`` takes every field of
``SearchConfig`` as an option, ``warmup`` the fields it shares with ``run`` and its own ``--epochs`` (zoo.options).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, fields

from search.gradient.compare import add_parser as add_compare_parser
from search.gradient.config import WARMUP_EPOCHS, WARMUP_FIELDS, SearchConfig
from search.gradient.search import Search
from search.training import distributed as D
from zoo.options import add_options, from_args, option


@dataclass
class WarmupOptions:
    """What ``search warmup`` adds to the fields it shares with ``run``: its epochs are the warm-up's."""

    epochs: int = option(WARMUP_EPOCHS, "warm-up epochs")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``warmup``, ``run`` and ``compare`` on ``proxyless search``."""
    w = subparsers.add_parser("warmup", help="train supernet weights on uniformly sampled paths (shared warm-up)")
    shared = {"out", *WARMUP_FIELDS}
    add_options(w, SearchConfig, skip=[f.name for f in fields(SearchConfig) if f.name not in shared])
    add_options(w, WarmupOptions)
    w.set_defaults(func=_cmd_warmup)
    r = subparsers.add_parser("run", help="architecture search (ProxylessNAS-G or -R) for one latency target")
    add_options(r, SearchConfig)
    r.set_defaults(func=_cmd_run)
    add_compare_parser(subparsers)


def _execute(cfg: SearchConfig) -> int:
    search = Search(cfg)
    try:
        result = search.run()
    finally:
        search.close()
        D.cleanup()
    if search.main:
        print(json.dumps(result))
    return 0


def warmup_config(args: argparse.Namespace) -> SearchConfig:
    """The config of a ``search warmup``: a run with no search (``algo`` None) whose epochs are all warm-up."""
    return from_args(SearchConfig, args, algo=None, warmup_epochs=args.epochs, epochs=0, target=None)


def run_config(args: argparse.Namespace) -> SearchConfig:
    """The config of a ``search run``; ``--init-from`` replaces the warm-up."""
    return from_args(SearchConfig, args, **({"warmup_epochs": 0} if args.init_from else {}))


def _cmd_warmup(args: argparse.Namespace) -> int:
    return _execute(warmup_config(args))


def _cmd_run(args: argparse.Namespace) -> int:
    return _execute(run_config(args))
