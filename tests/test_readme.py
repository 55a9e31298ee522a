"""The README is a short product page whose figures are the recorded ones: the results table's top-1, intervals,
MACs and latencies match the nets' metadata and the measured latencies, and its links resolve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from scipy.stats import binomtest

from zoo import get_model_info

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
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
