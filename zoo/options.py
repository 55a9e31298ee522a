"""Command-line options derived from a config dataclass, so that each setting is declared once: its name, type
and default in the dataclass, its help (and choices) in the field's metadata, via ``option``.

``add_options`` turns every field that has help into ``--field-name`` (booleans into ``--x/--no-x``, or a bare
switch with ``switch=True``; tuples into comma-separated lists, or a repeatable flag with ``repeat=True``;
``X | None`` into an optional ``X``; ``positional=True`` into an argument); ``from_args`` builds the dataclass
back from the parsed arguments. Every subcommand of ``proxyless`` declares its options this way.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    flag: str | tuple[str, ...] | None = None,
    const: Any = None,
    required: bool = False,
    switch: bool = False,
    positional: bool = False,
    nargs: str | None = None,
    metavar: str | None = None,
    repeat: bool = False,
    exclusive: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line option: ``default`` ``dataclasses.MISSING`` makes it
    required; ``const`` lets the flag stand alone (``--amp`` = ``--amp bf16``); ``flag`` renames it (a tuple:
    aliases); ``required`` makes the flag required though the field keeps its default (a setting that only some
    commands need); ``switch`` makes a boolean a bare flag that flips its default (``--force``; with ``flag``,
    ``--no-progress`` for a field ``progress`` that defaults to True); ``positional`` makes it an argument
    (``nargs`` as argparse's); ``repeat`` collects a repeated flag into a tuple; fields that share ``exclusive``
    form a mutually exclusive group (required if one of them is); ``choices`` may be a function, called when the
    parser is built (a registry's names at that time)."""
    meta = {"help": help, "choices": choices, "flag": flag, "const": const, "required": required}
    meta |= {"switch": switch, "positional": positional, "nargs": nargs, "metavar": metavar, "repeat": repeat}
    meta["exclusive"] = exclusive
    return dataclasses.field(default=default, metadata=meta)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where the help does not already say it and it means something: no
    "(default: the bundled one) (default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        switch = action.nargs == 0 and isinstance(action.const, bool)  # --force, --no-progress: said by the flag
        if action.default is None or "default" in text or switch:
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
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip and f.metadata.get("help")]
    groups: dict[str, Any] = {}
    for f in fields:
        if (name := f.metadata.get("exclusive")) and name not in groups:
            members = [g for g in fields if g.metadata.get("exclusive") == name]
            needed = any(g.default is dataclasses.MISSING or g.metadata.get("required") for g in members)
            groups[name] = parser.add_mutually_exclusive_group(required=needed)
    for f in fields:
        meta = f.metadata
        target = groups.get(meta.get("exclusive") or "", parser)
        flags, kwargs = _flags(f), _kwargs(f, _base(hints[f.name]))
        if meta.get("exclusive"):
            kwargs.pop("required", None)
        target.add_argument(*flags, **kwargs)


def _flags(f: dataclasses.Field) -> tuple[str, ...]:
    """``--field-name``, the ``flag`` (or aliases) given, or the bare name of a positional."""
    flag = f.metadata.get("flag")
    if f.metadata.get("positional"):
        return (f.name,)
    if flag is None:
        return ("--" + f.name.replace("_", "-"),)
    return (flag,) if isinstance(flag, str) else tuple(flag)


def _kwargs(f: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """argparse's keywords for one field."""
    meta = f.metadata
    shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
    quiet = f.default is None or f.default is dataclasses.MISSING or meta.get("switch") or meta.get("repeat")
    text = meta["help"] if quiet or "default" in meta["help"] else f"{meta['help']} (default {shown})"
    kwargs: dict[str, Any] = {"help": text}
    if not meta.get("positional"):
        kwargs["dest"] = f.name
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    if meta.get("positional"):
        if meta.get("nargs"):
            kwargs["nargs"] = meta["nargs"]
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
    elif f.default is dataclasses.MISSING or meta.get("required"):
        kwargs["required"] = True
    else:
        kwargs["default"] = f.default
    if meta.get("const") is not None:
        kwargs.update(nargs="?", const=meta["const"])
    item = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else None
    if meta.get("switch"):
        kwargs["action"] = "store_false" if f.default else "store_true"
    elif hint is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif meta.get("repeat"):
        kwargs.update(action="append", default=[], type=item)
    elif item is not None and not meta.get("nargs"):
        kwargs["type"] = _csv(item)
    else:
        choices = meta.get("choices")
        kwargs["type"] = item or hint
        kwargs["choices"] = choices() if callable(choices) else choices
    return kwargs


def non_finite(config: Any) -> str | None:
    """A refusal naming ``config``'s first float option that is NaN or infinite, or None: argparse takes "nan" for a
    float, and such a setting would run a whole training or search on garbage."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value) and f.metadata.get("help"):
            return f"{_flags(f)[0]} must be finite, got {value}"
    return None


def from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """``cls`` from the parsed options (fields without one keep their default), then ``overrides``."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}  # type: ignore[arg-type]
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}  # repeat / nargs lists
    return cls(**{**given, **overrides})
