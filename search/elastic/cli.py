"""The elastic route's subcommands of ``proxyless search``: train once, fit the predictor, specialize."""

from __future__ import annotations

from typing import Any

from search.elastic.extract import add_parser as add_extract_parser
from search.elastic.predictor_cli import add_parser as add_predictor_parser
from search.elastic.specialize import add_parser as add_specialize_parser
from search.elastic.train import add_parser as add_train_parser


def add_parsers(subparsers: Any) -> None:
    add_train_parser(subparsers)
    add_predictor_parser(subparsers)
    add_specialize_parser(subparsers)
    add_extract_parser(subparsers)
