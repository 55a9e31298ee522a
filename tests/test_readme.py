"""The README is a short product page whose figures are the recorded ones: the results table's top-1, intervals,
MACs and latencies match the nets' metadata and the measured latencies, and its links resolve. Its steps run as
written from a fresh clone: the torch.hub snippet with only hubconf's ``dependencies`` installed, every
``proxyless`` line's subcommand and flags, every ``make`` target."""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import binomtest

from zoo import get_model_info, registry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
REPO_PACKAGES = frozenset({"hubconf", "zoo", "search", "export", "demo"})


def _hub_dependencies() -> list[str]:
    """hubconf.py's ``dependencies``, read as torch.hub reads it (from the file, whatever sys.path holds)."""
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.dependencies)


HUB_DEPENDENCIES = _hub_dependencies()
# Imported by modules of hubconf's closure but only on paths torch.hub users do not take.
HUB_OPTIONAL = {"torchvision": "zoo.datasets' ImageNet / ImageFolder transforms (zoo eval, training)"}
ROW = re.compile(r"^\| `(\w+)` \| [^|]+ \| ([\d.]+)% \| ([\d.]+)-([\d.]+)% \| ([^|]+) \| ([\d.]+)M \| (.+) \|$", re.M)


def _generated_latencies(name: str) -> list[str]:
    """The net's CPU ONNX Runtime, Pixel-1 and H200 latencies measured by scripts/specialization.py."""
    latency = json.loads((ROOT / "benchmarks" / "results" / "specialization.json").read_text())["latency_ms"]
    return [f"{latency[hw][name]:.3f}" for hw in ("cpu", "mobile", "gpu")]


def seeds_cell(protocol: dict) -> str:
    mean, low, high = (100 * v for v in protocol["test_top1_mean_ci"])
    return f"{mean:.2f}% [{low:.2f}, {high:.2f}] ({len(protocol['seeds'])} seeds)"


def test_readme_is_short() -> None:
    assert len(README.splitlines()) <= 150


def test_results_table_is_the_recorded_figures() -> None:
    rows = ROW.findall(README)
    assert len(rows) >= 4, "the README's results table was not found"
    for name, top1, low, high, seeds, macs, latencies in rows:
        info = get_model_info(name)
        n, recorded = info.metrics["n_test"], info.metrics["top1"]
        assert float(top1) == pytest.approx(100 * recorded, abs=1e-9), name
        ci = binomtest(round(recorded * n), n).proportion_ci(0.95, method="exact")
        assert (float(low), float(high)) == (round(100 * ci.low, 2), round(100 * ci.high, 2)), name
        protocol = info.metrics.get("protocol")  # the specialization protocol's fine-tunes: mean [95%] over seeds
        expected = "one training" if protocol is None else seeds_cell(protocol)
        assert seeds.strip() == expected, name
        assert macs == f"{info.macs / 1e6:.1f}", name
        assert [c.strip().strip("*") for c in latencies.split("|")] == _generated_latencies(name), name


def test_links_resolve() -> None:
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README):
        assert (ROOT / target).exists(), target


# ---------------------------------------------------------------- torch.hub: hubconf's dependencies


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, at module level or inside functions (``from a import b``: a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def hub_closure() -> dict[str, set[str]]:
    """Each repo module hubconf.py imports, transitively (with the network modules the registry imports by name),
    mapped to the third-party top-level packages it imports."""
    todo = ["hubconf", *(family.module for family in registry._FAMILIES.values())]
    closure: dict[str, set[str]] = {}
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if module in closure or path is None:
            continue
        closure[module] = set()
        for name in _imported_names(path):
            top = name.partition(".")[0]
            if top in REPO_PACKAGES:
                parts = name.split(".")
                todo += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]  # packages run their __init__
            elif top not in sys.stdlib_module_names and top != "__future__":
                closure[module].add(top)
    return closure


def test_hubconf_dependencies_cover_its_imports() -> None:
    closure = hub_closure()
    assert {"zoo.registry", "zoo.datasets", "zoo.network", "zoo.pyramid_tree"} <= set(closure)
    missing = {
        f"{top} (imported by {module})"
        for module, tops in closure.items()
        for top in tops - set(HUB_DEPENDENCIES) - set(HUB_OPTIONAL)
    }
    assert not missing, f"add to hubconf.dependencies: {sorted(missing)}"


# Run before the README's snippet: an import made by a file of this repo (not of .venv) of a third-party package
# missing from hubconf.dependencies fails as it would where only those are installed, even when torch has already
# imported that package itself.
_GUARD = """
import builtins, os, sys
ROOT, ALLOWED = {root!r}, set({allowed!r})
_import = builtins.__import__
def _guarded(name, globals=None, locals=None, fromlist=(), level=0):
    file = os.path.abspath((globals or {{}}).get("__file__") or "")
    top = name.partition(".")[0]
    ours = file.startswith(ROOT + os.sep) and os.sep + ".venv" + os.sep not in file
    if ours and level == 0 and top not in ALLOWED and top not in sys.stdlib_module_names:
        raise ModuleNotFoundError(f"No module named {{top!r}} ({{file}}: not in hubconf.dependencies)", name=top)
    return _import(name, globals, locals, fromlist, level)
builtins.__import__ = _guarded
"""

HUB_SNIPPET = re.compile(r"```sh\npython - <<'EOF'\n(.*?)\nEOF\n```\n```\n(.*?)\n```", re.S)
FMNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


@pytest.mark.skipif(not FMNIST_TEST.is_file(), reason="the snippet reads the Debian package's Fashion-MNIST")
def test_torch_hub_snippet_runs_with_only_hubconf_dependencies() -> None:
    snippet, expected = HUB_SNIPPET.search(README).groups()
    assert "torch.hub.load(" in snippet
    allowed = sorted(REPO_PACKAGES | set(HUB_DEPENDENCIES) | {"__main__"})
    guard = _GUARD.format(root=str(ROOT), allowed=allowed)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", guard + snippet], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == expected.strip()


def test_readme_lists_the_hub_dependencies() -> None:
    line = next(line for line in README.splitlines() if "For `torch.hub` without installing" in line)
    assert {f"`{d}`" for d in HUB_DEPENDENCIES} <= set(re.findall(r"`[\w-]+`", line)), line


# ---------------------------------------------------------------- the README's shell steps

SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
INLINE = re.compile(r"`([^`]+)`")


def sh_commands() -> list[list[str]]:
    """Each command of the README's ``sh`` blocks (heredoc bodies skipped, ``&&`` splitting), as words."""
    commands: list[list[str]] = []
    for block in SH_BLOCK.findall(README):
        heredoc = None
        for line in block.splitlines():
            if heredoc is not None:
                heredoc = None if line.strip() == heredoc else heredoc
                continue
            if "<<" in line:
                heredoc = line.split("<<", 1)[1].strip().strip("'\"")
            words = shlex.split(line, comments=True)
            while "&&" in words:
                cut = words.index("&&")
                commands.append(words[:cut])
                words = words[cut + 1 :]
            commands += [words] if words else []
    return commands


def inline_commands(program: str) -> list[list[str]]:
    """The README's inline code spans that start with ``program`` (they may wrap across lines), as words."""
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    spans = (" ".join(span.split()) for span in INLINE.findall(prose))
    return [shlex.split(span) for span in spans if span.startswith(program + " ")]


def _subcommand_parser(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    """The parser of the (sub)subcommand ``words`` name, following subparsers as far as they go."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and words and words[0] in action.choices:
            return _subcommand_parser(action.choices[words[0]], words[1:])
    return parser


def unknown_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The ``--flags`` of ``argv`` its subcommand does not spell exactly (argparse would take ``--format``)."""
    sub = _subcommand_parser(parser, argv)
    return {w.split("=", 1)[0] for w in argv if w.startswith("--")} - set(sub._option_string_actions)


def proxyless_parser(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The package parser of ``proxyless PACKAGE ...`` and the arguments it parses (``export SOURCE``: ``run``)."""
    package, argv = words[1], words[2:]
    cli = importlib.import_module(f"{package}.cli")
    if package == "export" and argv and argv[0] not in cli.SUBCOMMANDS:
        argv = ["run", *argv]
    return cli.build_parser(), argv


def test_readme_proxyless_commands_parse() -> None:
    """Every ``proxyless`` line of a shell block parses as written: subcommands, flags, choices, required args."""
    lines = [c for c in sh_commands() if c[0] == "proxyless"]
    assert len(lines) >= 4, "the README's proxyless commands were not found"
    for words in lines:
        parser, argv = proxyless_parser(words)
        assert not unknown_flags(parser, argv), f"README: `{shlex.join(words)}`: {unknown_flags(parser, argv)}"
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README: `{shlex.join(words)}` does not parse (see stderr)")


def test_readme_inline_proxyless_commands_exist() -> None:
    """Inline mentions (``proxyless zoo publish FOLDER --repo ORG/NAME``) name real subcommands and flags."""
    mentions = inline_commands("proxyless")
    assert len(mentions) >= 4
    for words in mentions:
        parser, argv = proxyless_parser(words)
        sub = _subcommand_parser(parser, argv)
        positional = [w for w in argv if not w.startswith("-")]
        assert sub is not parser or not positional, f"README: `{shlex.join(words)}`: no such subcommand"
        assert not unknown_flags(parser, argv), f"README: `{shlex.join(words)}`: {unknown_flags(parser, argv)}"


def test_readme_make_targets_and_variables_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w.-]+):", makefile, re.M))
    uses = [c for c in sh_commands() if c[0] == "make"] + inline_commands("make")
    assert {"demo", "test"} <= {w for c in uses for w in c[1:]}
    for words in uses:
        for word in words[1:]:
            if "=" in word:
                assert f"$({word.split('=')[0]})" in makefile, f"README: `{shlex.join(words)}`: no such variable"
            else:
                assert word in targets, f"README: `{shlex.join(words)}`: no target {word}"


def test_readme_says_to_activate_the_venv() -> None:
    """``make`` installs ``proxyless`` into .venv/bin, which is not on PATH until activated (issue 40)."""
    commands = sh_commands()
    first = next(i for i, c in enumerate(commands) if c[0] == "proxyless")
    assert ["source", ".venv/bin/activate"] in commands[:first]


def test_readme_journeys_write_distinct_ignored_folders() -> None:
    outs = [c[c.index("--out") + 1] for c in sh_commands() if c[0] == "proxyless" and "--out" in c]
    assert len(outs) >= 4 and len(set(outs)) == len(outs), f"two README steps write the same place: {outs}"
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", *outs], cwd=ROOT, capture_output=True, text=True).stdout
    assert set(ignored.split()) == set(outs), f"not git-ignored: {sorted(set(outs) - set(ignored.split()))}"
