"""One guarded reader for every file a user can hand the project, and checks for the numbers in it.

A latency table, ``supernet.json``, a predictor's config, a CSV of measured subnets or an export report may come
from anywhere. Each is read the same way: a regular file only (``/dev/zero`` never ends and a FIFO blocks, so
both are refused before a byte is read), at most a size cap, UTF-8, and JSON strictly (``NaN`` / ``Infinity`` and
numbers that overflow to infinity are refused: they are not JSON, and a NaN latency silently drops an op from a
search). Every refusal is one ``InputError`` line naming the file and what it should be. ``number`` and
``count`` check a value (option or file field) is finite and within bounds before any expensive work.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

MAX_JSON_BYTES = 16 * 2**20  # a latency table is ~30 KB, supernet.json a few KB: 16 MiB is generous
MAX_TEXT_BYTES = 64 * 2**20  # CSVs and YAML tables


class InputError(ValueError):
    """A file or value that cannot be used as given; the message is one line naming it and what it should be.

    A ValueError, so every CLI that prints one-line errors for bad input (exit 2) already prints this one."""


def _open_regular(path: Path, what: str) -> int:
    """A read-only descriptor of ``path`` if it is a regular file. O_NONBLOCK makes opening a FIFO return at once
    and the type is checked on the descriptor itself, so nothing swapped in after a check is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputError(f"{path}: missing (expected {what})") from None
    except IsADirectoryError:
        raise InputError(f"{path}: a folder, not a regular file (expected {what})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror}); expected {what}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{path}: not a regular file (a device, FIFO, socket or folder cannot be {what})")
    return fd


def read_bytes(path: str | os.PathLike[str], what: str, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (``what`` names the expected content in errors)."""
    path = Path(path)
    fd = _open_regular(path, what)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        data = f.read(max_bytes + 1) if size <= max_bytes else b""
    if size > max_bytes or len(data) > max_bytes:
        raise InputError(f"{path}: {max(size, len(data)):,} bytes; {what} is at most {max_bytes:,}")
    return data


def read_text(path: str | os.PathLike[str], what: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A regular UTF-8 text file of at most ``max_bytes``; a binary file (a JPEG) is named, not decoded."""
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); expected {what}"
        ) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a float")
    return value


def read_json(path: str | os.PathLike[str], what: str, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The JSON object of a guarded file, parsed strictly: no NaN, Infinity or overflowing numbers."""
    text = read_text(path, what, max_bytes)
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not JSON ({e}); expected {what}") from None
    except ValueError as e:
        raise InputError(f"{path}: {e}; expected {what}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a JSON {type(data).__name__}, not an object; expected {what}")
    return data


def csv_stream(path: str | os.PathLike[str], what: str, max_bytes: int = MAX_TEXT_BYTES) -> io.StringIO:
    """A guarded text file as a stream for ``csv`` (newline handling as ``open(newline='')`` gives it)."""
    return io.StringIO(read_text(path, what, max_bytes), newline="")


def number(value: Any, name: str, low: float, high: float, *, low_open: bool = False) -> float:
    """``value`` as a float if it is a finite number in [low, high] (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
        bounds = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"
        raise InputError(f"{name} must be a finite number {bounds}, got {value!r}")
    return float(value)


def count(value: Any, name: str, low: int, high: int) -> int:
    """``value`` if it is an int in [low, high] (a search size, a batch, a number of threads)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low:,} and {high:,}, got {value:,}")
    return value


def one_line(e: Exception) -> str:
    """A library's error in one short line for a message of ours (torch's state_dict errors span many lines)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = " ".join(lines[:2]) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
