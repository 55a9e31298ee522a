"""The bundled Fashion-MNIST nets' results tables, written from their recorded figures only.

One generator for every copy, so that no figure is typed by hand: the nets' metadata (``zoo/pretrained/*/config.json``:
test top-1 and images, the protocol's seeds, params, MACs) and ``benchmarks/results/specialization.json`` (the
latencies ``scripts/specialization.py`` measured here or predicted, and its paired tests) become the text between
marker comments:

    <!-- results:start --> ... <!-- results:end -->               README.md and docs/results.md: top-1, latency, advice
    <!-- specialization:start --> ... <!-- specialization:end --> docs/results.md: every net on every hardware

    python scripts/results_tables.py           # rewrite them (after bundling or re-measuring)
    python scripts/results_tables.py --check   # exit 1 naming each stale table (tests/test_results_tables.py)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from zoo import get_model_info  # noqa: E402
from zoo.files import atomic_write  # noqa: E402

MEASURED = ROOT / "benchmarks" / "results" / "specialization.json"
PAGES = {ROOT / "README.md": ("results",), ROOT / "docs" / "results.md": ("results", "specialization")}
BASELINE = "fmnist_mobilenetv2"
PLOT_TEXT = "every net on every hardware"
# The README's latency columns: hardware of specialization.json -> column title.
COLUMNS = {"cpu": "CPU ms", "mobile": "Pixel-1 ms", "gpu": "H200 ms"}
HARDWARE_WORDS = {"cpu": "this CPU", "mobile": "Pixel 1", "gpu": "H200"}


class TablesError(ValueError):
    """A page or a figure the tables cannot be written from; the message is one line."""


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


@dataclass(frozen=True)
class NetFigures:
    """One bundled net's recorded figures (its metadata), as the tables show them."""

    name: str
    made_for: str
    top1: float
    ci: tuple[float, float]  # 95% Clopper-Pearson interval of top1 on n_test images
    seeds: str  # its protocol's seeds: mean [95% interval], or "one training"
    params: int
    macs: int
    hardware: str | None  # the hardware it was specialized for


def clopper_pearson(top1: float, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(round(top1 * n), n).proportion_ci(0.95, method="exact")
    return ci.low, ci.high


def net_figures(name: str) -> NetFigures:
    info = get_model_info(name)
    m = info.metrics or {}
    if m.get("top1") is None or not m.get("n_test"):
        raise TablesError(f"zoo/pretrained/{name}/config.json: metrics need top1 and n_test (bundle it again)")
    protocol = m.get("protocol")  # the seeds' record; a baseline's has no hardware
    hardware = protocol.get("hardware") if protocol else None
    made_for = "baseline, trained from scratch"
    if hardware is not None:
        made_for = f"{HARDWARE_WORDS.get(hardware, hardware)}, {protocol['net'].rsplit('_', 1)[1]}x"
    seeds = seeds_cell(m)
    top1 = float(m["top1"])
    return NetFigures(
        name, made_for, top1, clopper_pearson(top1, int(m["n_test"])), seeds, info.params, info.macs, hardware
    )


def seeds_cell(metrics: dict[str, Any]) -> str:
    """A net's seeds as the tables show them, from its metadata's protocol: mean [95% interval] (N seeds)."""
    protocol = metrics.get("protocol")
    if protocol is None:
        return "one training"
    mean, low, high = (100 * v for v in protocol["test_top1_mean_ci"])
    return f"{mean:.2f}% [{low:.2f}, {high:.2f}] ({len(protocol['seeds'])} seeds)"


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TablesError(f"{path}: cannot read ({e}); run scripts/specialization.py") from None


def check_measured(figures: dict[str, Any], nets: list[NetFigures], path: Path) -> None:
    """Refuse figures measured on other weights than the bundled ones (their top-1 differs from the metadata)."""
    for net in nets:
        recorded = figures["top1"][net.name]
        if abs(recorded - net.top1) > 1e-9:
            raise TablesError(
                f"{path}: {net.name} measured with top-1 {recorded}, its metadata says {net.top1}: "
                "run scripts/specialization.py again"
            )


def _ms(latency: dict[str, float], name: str) -> str:
    cell = f"{latency[name]:.3f}"
    return f"**{cell}**" if min(latency, key=latency.__getitem__) == name else cell


def results_table(nets: list[NetFigures], latency: dict[str, dict[str, float]]) -> str:
    lines = [
        "| net | made for | top-1 | 95% interval | over seeds | MACs | " + " | ".join(COLUMNS.values()) + " |",
        "|---|---|---:|---:|---:|---:|" + "---:|" * len(COLUMNS),
    ]
    for n in nets:
        cells = [_ms(latency[hw], n.name) for hw in COLUMNS]
        lines.append(
            f"| `{n.name}` | {n.made_for} | {100 * n.top1:.2f}% | {100 * n.ci[0]:.2f}-{100 * n.ci[1]:.2f}% | "
            f"{n.seeds} | {n.macs / 1e6:.1f}M | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def advice(nets: list[NetFigures], latency: dict[str, dict[str, float]]) -> str:
    """One sentence per net: when to use it, from its top-1 and its speed on its own hardware."""
    base = next(n for n in nets if n.name == BASELINE)
    best = max(n.top1 for n in nets) == base.top1
    lines = [f"- `{base.name}`: {'the most accurate' if best else 'the baseline'}: use it where latency matters less."]
    for n in nets:
        if n is base or n.hardware not in latency:
            continue
        here = latency[n.hardware]
        speed, points = here[base.name] / here[n.name], 100 * (base.top1 - n.top1)
        where = HARDWARE_WORDS.get(n.hardware, n.hardware)
        if speed > 1 and points <= 0:
            lines.append(f"- `{n.name}`: {speed:.2f}x faster on {where} and as accurate: use it there.")
        elif speed > 1:
            lines.append(
                f"- `{n.name}`: {speed:.2f}x faster on {where} and {points:.2f} points less accurate: "
                "use it there if that speed is worth the points."
            )
        else:
            lines.append(f"- `{n.name}`: no faster on {where}: use `{base.name}`.")
    return "\n".join(lines)


def _paired_text(verdict: dict[str, Any]) -> str:
    if "paired" not in verdict:
        return ""
    t = verdict["paired"]
    return (
        f" (McNemar p = {t['p']:.2f} on {t['images']} test images: {t['baseline_only']} right only by the "
        f"baseline, {t['net_only']} only by this net)"
    )


def specialization_table(figures: dict[str, Any]) -> str:
    """Every net of ``figures`` (specialization.json) on every hardware, then each specialized net's verdict."""
    acc, size, latency, hardware = figures["top1"], figures["size"], figures["latency_ms"], figures["hardware"]
    lines = [
        "| net | params | MACs | top-1 (10k test) | " + " | ".join(f"{title} ms" for title in hardware.values()) + " |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in hardware) + " |",
    ]
    for name in acc:
        params, macs = size[name]["params"] / 1e6, size[name]["macs"] / 1e6
        cells = " | ".join(_ms(latency[hw], name) for hw in hardware)
        lines.append(f"| `{name}` | {params:.3f}M | {macs:.1f}M | {100 * acc[name]:.2f}% | {cells} |")
    bar = (
        f", a win being at least {figures['min_speedup']:g}x faster at equal or better top-1"
        if "min_speedup" in figures
        else ""
    )
    lines += [
        "",
        f"Bold: the fastest net on that hardware. Specialized nets against the baseline (`{BASELINE}`){bar}:",
        "",
    ]
    for hw, v in figures["specialized"].items():
        seeds = f"; over seeds: {v['seeds']['net']} against {v['seeds']['baseline']}" if "seeds" in v else ""
        lines.append(
            f"- {hw}: `{v['net']}` {'wins' if v['wins'] else 'does not win'}: {v['speedup_vs_baseline']:.2f}x the "
            f"baseline's speed, {v['accuracy_delta_points']:+.2f} points of accuracy{_paired_text(v)}{seeds}; "
            f"fastest of all: {'yes' if v['fastest'] else 'no'}"
        )
    return "\n".join(lines) + "\n"


def specialization_block(figures: dict[str, Any], png: Path, page: Path) -> str:
    link = os.path.relpath(png, page.parent)
    return f"{specialization_table(figures)}\n![{PLOT_TEXT}]({link})"


def replace_block(text: str, name: str, body: str, where: Path) -> str:
    """``text`` with what stands between ``name``'s markers replaced by ``body``."""
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise TablesError(f"{where} needs one {start} line followed by one {end} line")
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{body}\n{end}{rest.split(end, 1)[1]}"


def write_block(page: Path, name: str, body: str) -> None:
    atomic_write(page, replace_block(page.read_text(), name, body, page))


def measured_nets(figures: dict[str, Any], path: Path) -> list[str]:
    """The bundled Fashion-MNIST nets in the order measured; refused if one was not, or the baseline is missing."""
    from zoo import list_models

    names = list_models(pretrained_only=True, dataset="fashion-mnist")
    missing = sorted(set(names) - set(figures.get("top1", {})))
    if missing or BASELINE not in names:
        raise TablesError(f"{path}: {', '.join(missing) or BASELINE} not measured; run scripts/specialization.py")
    return [n for n in figures["top1"] if n in names]


def blocks(measured: Path = MEASURED) -> dict[str, str]:
    """Each marker's text for the pages (the specialization block's plot linked from docs/)."""
    figures = read_json(measured)
    nets = [net_figures(name) for name in measured_nets(figures, measured)]
    check_measured(figures, nets, measured)
    latency = figures["latency_ms"]
    results = f"{results_table(nets, latency)}\n\n{advice(nets, latency)}"
    png = measured.with_suffix(".png")
    return {"results": results, "specialization": specialization_block(figures, png, ROOT / "docs" / "results.md")}


def stale_pages(texts: dict[Path, str], wanted: dict[str, str]) -> list[str]:
    """``page: marker`` for each block of ``texts`` that differs from ``wanted``."""
    stale = []
    for page, text in texts.items():
        for name in PAGES[page]:
            if replace_block(text, name, wanted[name], page) != text:
                stale.append(f"{page.relative_to(ROOT)}: {name}")
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed table differs")
    args = ap.parse_args(argv)
    try:
        wanted = blocks()
        texts = {page: page.read_text() for page in PAGES}
        stale = stale_pages(texts, wanted)
        if args.check:
            for line in stale:
                print(f"stale: {line} (python scripts/results_tables.py rewrites it)", file=sys.stderr)
            return 1 if stale else 0
        for page in PAGES:
            for name in PAGES[page]:
                write_block(page, name, wanted[name])
    except (TablesError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"rewritten": stale}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
