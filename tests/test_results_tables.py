"""scripts/results_tables.py: the committed results tables are exactly what the generator makes from the nets'
metadata and the recorded measurements, so no figure of theirs is typed by hand."""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/results.md")


@pytest.fixture(scope="module")
def tables() -> ModuleType:
    return importlib.import_module("scripts.results_tables")  # as scripts/specialization.py imports it


@pytest.fixture(scope="module")
def wanted(tables: ModuleType) -> dict[str, str]:
    return tables.blocks()


def test_the_committed_tables_are_the_generators(tables: ModuleType, wanted: dict[str, str]) -> None:
    texts = {page: page.read_text() for page in tables.PAGES}
    assert tables.stale_pages(texts, wanted) == [], "run: python scripts/results_tables.py"


def test_a_hand_edited_figure_is_stale(tables: ModuleType, wanted: dict[str, str]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    top1 = f"{100 * tables.net_figures(tables.BASELINE).top1:.2f}%"
    start = text.index("<!-- results:start -->")  # a figure inside the generated block, not a quoted output
    assert top1 in text[start:]
    edited = text[:start] + text[start:].replace(top1, "99.99%", 1)
    assert tables.stale_pages({readme: edited}, wanted) == ["README.md: results"]


def test_each_bundled_nets_top1_is_in_at_most_the_two_generated_pages(tables: ModuleType) -> None:
    """Issue 38's acceptance: other pages link to the table instead of repeating its figures."""
    tracked = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    pages = [ROOT / p for p in tracked.stdout.split()]
    for name in tables.measured_nets(tables.read_json(tables.MEASURED), tables.MEASURED):
        top1 = f"{100 * tables.net_figures(name).top1:.2f}%"
        holding = sorted(str(p.relative_to(ROOT)) for p in pages if p.is_file() and top1 in p.read_text())
        assert holding == sorted(PAGES), f"{name}'s {top1} is written in {holding}"


def test_figures_measured_on_other_weights_are_refused(tables: ModuleType, tmp_path: Path) -> None:
    figures = json.loads(tables.MEASURED.read_text())
    figures["top1"][tables.BASELINE] += 0.001
    stale = tmp_path / "specialization.json"
    stale.write_text(json.dumps(figures))
    with pytest.raises(tables.TablesError, match=f"{stale}: {tables.BASELINE} measured with top-1") as e:
        tables.blocks(stale)
    assert "run scripts/specialization.py again" in str(e.value) and "\n" not in str(e.value)


def test_a_page_without_its_markers_is_a_one_line_error(tables: ModuleType) -> None:
    with pytest.raises(tables.TablesError, match=r"^x.md needs one <!-- results:start --> line followed by one"):
        tables.replace_block("no markers\n", "results", "table", Path("x.md"))
    start, end = tables.markers("results")
    assert tables.replace_block(f"a\n{start}\nold\n{end}\nb\n", "results", "new", Path("x.md")) == (
        f"a\n{start}\nnew\n{end}\nb\n"
    )


def test_the_advice_follows_the_figures(tables: ModuleType) -> None:
    def net(name: str, top1: float, hardware: str | None) -> object:
        return tables.NetFigures(name, "", top1, (0.0, 1.0), "", 1, 1, hardware)

    nets = [net(tables.BASELINE, 0.94, None), net("fast", 0.93, "cpu"), net("equal", 0.95, "gpu")]
    nets.append(net("slow", 0.95, "mobile"))
    latency = {"cpu": {tables.BASELINE: 1.0, "fast": 0.5}, "gpu": {tables.BASELINE: 2.0, "equal": 1.0}}
    latency["mobile"] = {tables.BASELINE: 1.0, "slow": 1.5}
    lines = tables.advice(nets, latency).splitlines()
    assert lines[0] == f"- `{tables.BASELINE}`: the baseline: use it where latency matters less."
    assert lines[1] == (
        "- `fast`: 2.00x faster on this CPU and 1.00 points less accurate: "
        "use it there if that speed is worth the points."
    )
    assert lines[2] == "- `equal`: 2.00x faster on H200 and as accurate: use it there."
    assert lines[3] == f"- `slow`: no faster on Pixel 1: use `{tables.BASELINE}`."


def test_a_baseline_with_seeds_is_still_the_baseline(tables: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Step 7 of docs/finetune.md gives the baseline a seeds record too: no hardware in it, so no "made for"."""
    protocol = {"seeds": [0, 1], "test_top1_mean_ci": [0.9468, 0.9437, 0.9499]}
    info = SimpleNamespace(metrics={"top1": 0.9469, "n_test": 10000, "protocol": protocol}, params=1, macs=2)
    monkeypatch.setattr(tables, "get_model_info", lambda name: info)
    net = tables.net_figures(tables.BASELINE)
    assert (net.made_for, net.seeds, net.hardware) == (
        "baseline, trained from scratch",
        "94.68% [94.37, 94.99] (2 seeds)",
        None,
    )
    protocol |= {"hardware": "cpu", "net": "cpu_0.75"}
    assert (tables.net_figures("x").made_for, tables.net_figures("x").hardware) == ("this CPU, 0.75x", "cpu")
