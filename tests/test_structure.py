"""The layout of the code, read from the files with ``ast`` (nothing is imported): search/'s packages
(gradient, training, elastic, latency, and the spaces module) import each other without a cycle, and no module
imports another module's private name (``from x import _y``), so that each package can be read, tested and moved
on its own (issue 38).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The shipped code; tests/ may test a module's private helpers directly, so it is not held to the rule.
PROJECT = ("zoo", "search", "export", "demo", "scripts", "benchmarks")
SKIP_DIRS = {".venv", "__pycache__", "node_modules"}


@dataclass(frozen=True)
class Import:
    """One ``import`` / ``from ... import`` statement, resolved to an absolute module name."""

    path: Path
    line: int
    module: str
    names: tuple[str, ...]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(*tops: str) -> Iterator[Path]:
    for top in tops:
        for path in sorted((ROOT / top).rglob("*.py")):
            if not SKIP_DIRS & set(path.relative_to(ROOT).parts):
                yield path


def imports(path: Path) -> Iterator[Import]:
    """Every import of ``path``, function-level ones included (a lazy import still ties two modules)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name, ())
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            yield Import(path, node.lineno, module, tuple(a.name for a in node.names))


def is_project_module(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def search_unit(module: str) -> str | None:
    """The package (or top-level module) of search/ that ``module`` belongs to: ``search.gradient.cli`` ->
    ``search.gradient``; None outside search/ and for search's own ``__init__``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "search" and len(parts) > 1 else None


def targets(imp: Import) -> Iterator[str]:
    """The modules an import reaches: ``from search import distributed`` reaches ``search.distributed``."""
    yield imp.module
    for name in imp.names:
        if is_project_module(f"{imp.module}.{name}"):
            yield f"{imp.module}.{name}"


def search_graph() -> dict[str, dict[str, str]]:
    """unit -> {unit it imports: where (file:line of the first such import)}."""
    graph: dict[str, dict[str, str]] = {}
    for path in python_files("search"):
        src = search_unit(module_name(path))
        if src is None:
            continue
        edges = graph.setdefault(src, {})
        for imp in imports(path):
            for dst in filter(None, map(search_unit, targets(imp))):
                if dst != src:
                    edges.setdefault(dst, f"{path.relative_to(ROOT)}:{imp.line}")
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle of ``graph`` as its units in order (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(unit: str) -> list[str] | None:
        state[unit] = 1
        stack.append(unit)
        for dst in sorted(graph.get(unit, {})):
            if state.get(dst) == 1:
                return [*stack[stack.index(dst) :], dst]
            if dst not in state and (cycle := visit(dst)):
                return cycle
        stack.pop()
        state[unit] = 2
        return None

    for unit in sorted(graph):
        if unit not in state and (cycle := visit(unit)):
            return cycle
    return None


def test_search_is_split_into_the_packages_that_say_what_they_hold() -> None:
    """The graph below is read from this layout: without it the cycle test would pass on nothing."""
    graph = search_graph()
    for unit in ("search.gradient", "search.training", "search.elastic", "search.latency", "search.space"):
        assert unit in graph, f"{unit} not found under search/"
    assert "search.elastic" in graph["search.gradient"] and "search.training" in graph["search.elastic"]


def test_no_import_cycle_between_search_packages() -> None:
    graph = search_graph()
    cycle = find_cycle(graph)
    if cycle:
        where = [f"{a} -> {b} ({graph[a][b]})" for a, b in itertools.pairwise(cycle)]
        raise AssertionError("import cycle between search's packages:\n  " + "\n  ".join(where))


def test_no_private_name_imported_across_modules() -> None:
    found = []
    for path in python_files(*PROJECT):
        for imp in imports(path):
            if imp.module == module_name(path) or not is_project_module(imp.module):
                continue
            private = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
            if private:
                found.append(f"{path.relative_to(ROOT)}:{imp.line}: from {imp.module} import {', '.join(private)}")
    assert not found, "private names imported from another module (make them public):\n  " + "\n  ".join(found)
