"""``proxyless zoo ...`` (also ``python -m zoo``): inspect the registry and manage weights.

``list`` and ``info`` live here; every other subcommand lives in its own module, which exposes
``add_parser(subparsers)`` (setting ``func=run(args) -> int`` via ``set_defaults``) and is registered by adding
its module name to ``SUBCOMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import MISSING, dataclass
from typing import Any

from zoo.options import add_options, option
from zoo.registry import ModelInfo, get_model_info, list_models, no_weights_message

SUBCOMMAND_MODULES = ("zoo.official", "zoo.evaluate", "zoo.publish")


def _weights_text(info: ModelInfo) -> str:
    w = info.weights
    if w is None:
        return "none"
    return "hf-hub" if w.repo_id else "local"


def _summary(info: ModelInfo) -> dict[str, Any]:
    w = info.weights
    return {
        "name": info.name,
        "dataset": info.dataset,
        "input_size": list(info.input_size),
        "num_classes": info.num_classes,
        "params": info.params,
        "macs": info.macs,
        "top1": info.metrics.get("top1"),
        "weights": None if w is None else {"source": w.source, "sha256": w.sha256},
    }


def _run_list(args: argparse.Namespace) -> int:
    rows = [_summary(get_model_info(n)) for n in list_models(pretrained_only=args.pretrained)]
    header = f"{'name':<24}{'dataset':<15}{'input':<11}{'params':>9}{'MACs':>10}{'top1':>8}  weights"
    print(header)
    for r in rows:
        top1 = f"{r['top1'] * 100:.2f}%" if r["top1"] is not None else "?"
        print(
            f"{r['name']:<24}{r['dataset']:<15}{'x'.join(map(str, r['input_size'])):<11}"
            f"{r['params'] / 1e6:>8.2f}M{r['macs'] / 1e6:>9.1f}M{top1:>8}  "
            f"{_weights_text(get_model_info(r['name']))}"
        )
    if args.json:
        print(json.dumps({"models": rows}))
    return 0


def _metrics_text(metrics: dict[str, Any]) -> str:
    parts = []
    if "top1" in metrics:
        parts.append(f"top-1 {metrics['top1'] * 100:.2f}%")
    parts += [f"{k} {v} ms" for k, v in metrics.get("latency_ms", {}).items()]
    parts += [f"{k} {v}" for k, v in metrics.items() if k not in ("top1", "latency_ms", "source")]
    text = "; ".join(parts) or "unknown"
    return f"{text} ({metrics['source']})" if "source" in metrics else text


def _run_info(args: argparse.Namespace) -> int:
    info = get_model_info(args.name)
    spec = info.arch.to_dict()
    blocks = spec.get("blocks") or []
    arch = f"{spec['format']}, {len(blocks)} blocks"
    if all(isinstance(b, str) for b in blocks):  # MBConv block strings are short enough to list
        arch += ": " + " ".join(blocks)
    if info.weights is None:
        weights = "none. " + no_weights_message(info.name).split(": ", 1)[1]
    else:
        weights = f"{info.weights.source} (sha256 {info.weights.sha256})"
    shown = ", ".join(info.categories[:5]) + (", ..." if len(info.categories) > 5 else "")
    lines = [
        f"{info.name}: {info.dataset}, {info.num_classes} classes ({shown})",
        f"source:  {info.source}",
        f"input:   {'x'.join(map(str, info.input_size))}, mean {info.mean}, std {info.std}",
        f"params:  {info.params / 1e6:.2f}M ({info.params:,})",
        f"MACs:    {info.macs / 1e6:.1f}M",
        f"metrics: {_metrics_text(info.metrics)}",
        f"arch:    {arch}",
        f"weights: {weights}",
    ]
    print("\n".join(lines))
    if args.json:
        record = _summary(info) | {
            "source": info.source,
            "mean": list(info.mean),
            "std": list(info.std),
            "categories": list(info.categories),
            "metrics": info.metrics,
            "arch": spec,
        }
        print(json.dumps(record))
    return 0


@dataclass(frozen=True)
class ListOptions:
    pretrained: bool = option(False, "only models with loadable weights", switch=True)
    json: bool = option(False, "end with one line of JSON", switch=True)


@dataclass(frozen=True)
class InfoOptions:
    name: str = option(MISSING, "registered model name", positional=True)
    json: bool = option(False, "end with one line of JSON", switch=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxyless zoo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="table of registered models")
    add_options(p, ListOptions)
    p.set_defaults(func=_run_list)
    p = sub.add_parser("info", help="details of one model: params, MACs, input, metrics, weights")
    add_options(p, InfoOptions)
    p.set_defaults(func=_run_info)
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as e:  # ArchError, WeightsError, ZooError: one line naming what is wrong
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable --out, a directory where a file belongs, ...
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
