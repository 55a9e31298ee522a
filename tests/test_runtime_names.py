"""One runtime registry: every list of runtime or format names derives from ``zoo/runtimes/``.

The structure test fails when a collection literal of two or more registered names appears in the packages
outside the registry (such a list goes stale the day a runtime is added); the recipe test follows
docs/architecture.md's "adding a runtime" once for a dummy runtime and checks that every consumer's list picks it
up with no other edit.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from zoo.runtimes import RuntimeSpec, register_runtime
from zoo.runtimes.formats import FORMATS, ArtefactFormat, register_format
from zoo.runtimes.registry import RUNTIMES, TABLE_ONLY_RUNTIMES

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "search", "export", "demo")
REGISTRY = ROOT / "zoo" / "runtimes"
DUMMY, DUMMY_FORMAT, DUMMY_PACKAGE = "dummyrt", "dummyfmt", "dummy-runtime-package"


@dataclass(frozen=True)
class NameList:
    """A collection literal in the source that spells out registered runtime or format names."""

    path: str
    line: int
    names: tuple[str, ...]


def registered_names() -> set[str]:
    return set(RUNTIMES) | set(FORMATS) | set(TABLE_ONLY_RUNTIMES)


def name_lists(source: str, path: str, names: set[str]) -> Iterator[NameList]:
    """Tuples, lists, sets and dict keys in ``source`` holding two or more string literals from ``names``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        else:
            continue
        hits = tuple(i.value for i in items if isinstance(i, ast.Constant) and i.value in names)
        if len(hits) >= 2:
            yield NameList(path, node.lineno, hits)


def lists_outside_registry() -> list[NameList]:
    names, found = registered_names(), []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if REGISTRY not in path.parents:
                found += name_lists(path.read_text(), str(path.relative_to(ROOT)), names)
    return found


def test_no_runtime_name_list_outside_the_registry() -> None:
    found = lists_outside_registry()
    assert not found, "lists of runtime/format names outside zoo/runtimes/ (derive them from the registry): " + (
        "; ".join(f"{f.path}:{f.line} {f.names}" for f in found)
    )


def test_the_scan_sees_a_planted_list() -> None:
    """The scan itself: a tuple of two names is a list, one name or unregistered words are not."""
    names = registered_names()
    planted = 'A = ("onnxruntime", "openvino")\nB = {"torch": 1, "pt2": 2}\nC = ("onnxruntime", "numpy")\n'
    assert [f.line for f in name_lists(planted, "x.py", names)] == [1, 2]


def _dummy_session(name: str, path: object, device: str, threads: int | None) -> object:
    raise AssertionError("the recipe test never runs the dummy runtime")


def _dummy_build(artefacts: object, path: Path) -> dict[str, str]:
    raise AssertionError("the recipe test never builds the dummy format")


def _dummy_entries() -> tuple[ArtefactFormat, RuntimeSpec]:
    """docs/architecture.md's recipe: one format entry (its file is new) and one runtime entry."""
    fmt = ArtefactFormat(DUMMY_FORMAT, ".dummy", _dummy_build, from_onnx=True)
    spec = RuntimeSpec(DUMMY, "Dummy Runtime", DUMMY_FORMAT, _dummy_session, lambda device: None, (DUMMY_PACKAGE,))
    return fmt, spec


@pytest.fixture
def dummy_runtime() -> Iterator[None]:
    fmt, spec = _dummy_entries()
    register_format(fmt)
    register_runtime(spec)
    try:
        yield
    finally:
        RUNTIMES.pop(DUMMY, None)
        FORMATS.pop(DUMMY_FORMAT, None)


def test_a_registered_runtime_reaches_every_list(dummy_runtime: None) -> None:
    from demo.app import latency_label, runtime_status
    from export.bench import BenchOptions
    from export.pipeline import FORMATS as EXPORT_FORMATS
    from export.pipeline import parse_formats
    from export.report import packages
    from zoo.model_card import describe_latency_key
    from zoo.runtimes import default_bench_runtimes, default_export_formats

    assert DUMMY_FORMAT in EXPORT_FORMATS and DUMMY_FORMAT in default_export_formats()
    assert parse_formats(DUMMY_FORMAT) == ("onnx", DUMMY_FORMAT)  # built from the ONNX file, made last
    assert DUMMY in default_bench_runtimes()
    assert BenchOptions(runtimes=(DUMMY,)).runtimes == (DUMMY,)
    assert DUMMY_PACKAGE in packages()
    assert describe_latency_key(f"cpu_{DUMMY}_b1") == ("CPU", "Dummy Runtime", 1, False)
    assert latency_label(f"cpu_{DUMMY}_b1") == "CPU, Dummy Runtime, batch 1"
    assert DUMMY in runtime_status()[0]


def test_the_options_defaults_derive_at_import() -> None:
    """The export and bench defaults are read from the registry when their module loads: a runtime registered
    before that is in them (a fresh interpreter, so this process's modules stay as they are)."""
    assert DUMMY not in RUNTIMES and DUMMY_FORMAT not in FORMATS  # the fixture above unregistered it
    script = (
        "from tests.test_runtime_names import _dummy_entries\n"
        "from zoo.runtimes import register_runtime\n"
        "from zoo.runtimes.formats import register_format\n"
        "fmt, spec = _dummy_entries(); register_format(fmt); register_runtime(spec)\n"
        "from export.bench import BenchOptions\n"
        "from export.pipeline import ExportOptions\n"
        "print(','.join(ExportOptions().formats), ','.join(BenchOptions().runtimes))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    formats, runtimes = out.stdout.split()
    assert formats.split(",")[-1] == DUMMY_FORMAT and runtimes.split(",")[-1] == DUMMY
