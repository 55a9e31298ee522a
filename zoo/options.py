"""Command-line options derived from a config dataclass, so that each setting is declared once: its name, type
and default in the dataclass, its help (and choices) in the field's metadata, via ``option``.

``add_options`` turns every field that has help into ``--field-name`` (booleans into ``--x/--no-x``, tuples into
comma-separated lists, ``X | None`` into an optional ``X``); ``from_args`` builds the dataclass back from the
parsed arguments. Used by ``proxyless export`` (``ExportOptions``, ``BenchOptions``), ``proxyless search train``
(``TrainConfig``) and the gradient search (``SearchConfig``).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[str] | None = None,
    flag: str | None = None,
    const: Any = None,
    required: bool = False,
) -> Any:
    """A dataclass field that is also a command-line option: ``default`` ``dataclasses.MISSING`` makes it
    required; ``const`` lets the flag stand alone (``--amp`` = ``--amp bf16``); ``flag`` renames it; ``required``
    makes the flag required though the field keeps its default (a setting that only some commands need)."""
    meta = {"help": help, "choices": choices, "flag": flag, "const": const, "required": required}
    return dataclasses.field(default=default, metadata=meta)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where the help does not already say it and it means something: no
    "(default: the bundled one) (default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or "default" in text:
            return text
        return super()._get_help_string(action)


def _csv(item: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        try:
            return tuple(item(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}") from None

    return parse


def _base(hint: Any) -> Any:
    """``X`` of ``X | None``; the hint itself otherwise."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return args[0] if union and len(args) == 1 else hint


def add_options(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """One option per field of ``cls`` that has help (see ``option``), defaults shown."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("help"):
            continue
        meta, hint = f.metadata, _base(hints[f.name])
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        text = meta["help"] if f.default in (None, dataclasses.MISSING) else f"{meta['help']} (default {shown})"
        kwargs: dict[str, Any] = {"dest": f.name, "help": text}
        if f.default is dataclasses.MISSING or meta.get("required"):
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        if meta.get("const") is not None:
            kwargs.update(nargs="?", const=meta["const"])
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            kwargs["type"] = _csv(typing.get_args(hint)[0])
        else:
            kwargs["type"] = hint
            kwargs["choices"] = meta.get("choices")
        parser.add_argument(flag, **kwargs)


def from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """``cls`` from the parsed options (fields without one keep their default), then ``overrides``."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}  # type: ignore[arg-type]
    return cls(**{**given, **overrides})
