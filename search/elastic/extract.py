"""A subnet of a trained supernet as a zoo weights folder: ``proxyless search extract`` and ``specialize``'s output.

The subnet is extracted with its inherited weights, its BN recalibrated on the supernet run's calibration images,
and saved with ``zoo.weights.save_pretrained``: ``create_model``, ``proxyless export`` and the demo load it as
any other weights folder. Its metadata names the supernet (sha256) and the inherited validation accuracy.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from search.elastic.evaluate import SubnetEvaluator
from search.elastic.space import ElasticSpace, Subnet
from search.elastic.store import load_supernet, resolve_supernet
from search.elastic.supernet import ElasticSupernet, recalibrate_bn
from zoo.datasets import get_dataset
from zoo.files import output_folder
from zoo.network import ProxylessNet, count_macs, count_params
from zoo.options import add_options, option
from zoo.weights import save_pretrained

NAMED = ("largest", "smallest", "baseline")


def parse_subnet(space: ElasticSpace, text: str) -> Subnet:
    """``largest`` / ``smallest`` / ``baseline``, or the form ``str(Subnet)`` prints: ``d2332-k37...-e63...``."""
    if text in NAMED:
        return getattr(space, text)()
    try:
        d, k, e = text.split("-")
        if (d[:1], k[:1], e[:1]) != ("d", "k", "e"):
            raise ValueError
        genes = [tuple(int(c) for c in part[1:]) for part in (d, k, e)]
    except ValueError:
        raise ValueError(
            f"bad subnet {text!r}: expected {', '.join(NAMED)} or 'd<depths>-k<kernels>-e<expands>'"
        ) from None
    return space.subnet(*genes)


def subnet_net(supernet: ElasticSupernet, subnet: Subnet, evaluator: SubnetEvaluator, name: str) -> ProxylessNet:
    """``subnet`` as a network of its own: the supernet's weights, BN recalibrated on the evaluator's images."""
    net = supernet.extract(subnet, name)
    recalibrate_bn(net, evaluator.calib)
    return net


def save_subnet(
    net: ProxylessNet,
    supernet_config: dict[str, Any],
    subnet: Subnet,
    out: str | Path,
    metrics: dict[str, Any],
    how: str,
    training: str = "not fine-tuned",
) -> None:
    """Save ``net`` as a zoo weights folder; ``metrics`` add to the recorded ones, ``how`` and ``training`` say
    how it was chosen and what happened to the inherited weights."""
    recipe = supernet_config["metadata"]["recipe"]
    data = get_dataset(recipe["dataset"])
    recorded = {
        "source": f"supernet-inherited accuracy on {recipe['val_size']} validation images held out from training",
        "subnet": str(subnet),
        "supernet_sha256": supernet_config["weights_sha256"],
        "params": count_params(net),
        "macs": count_macs(net.spec),
        **metrics,
    }
    metadata = {
        "dataset": recipe["dataset"],
        "input_size": [net.spec.in_chans, net.spec.input_size, net.spec.input_size],
        "mean": list(data.mean),
        "std": list(data.std),
        "categories": list(data.classes or []),
        "source": f"a subnet of an elastic supernet ({how}); weights inherited, BN recalibrated, {training}",
        "metrics": recorded,
    }
    save_pretrained(net, out, metadata)


def write_subnet(
    supernet: ElasticSupernet,
    supernet_config: dict[str, Any],
    subnet: Subnet,
    evaluator: SubnetEvaluator,
    out: str | Path,
    name: str,
    metrics: dict[str, Any],
    how: str,
) -> ProxylessNet:
    """Extract, recalibrate and save ``subnet``; ``metrics`` adds to the recorded ones, ``how`` to the source."""
    net = subnet_net(supernet, subnet, evaluator, name)
    save_subnet(net, supernet_config, subnet, out, metrics, how)
    return net


@dataclass(frozen=True, kw_only=True)  # required options among optional ones, in --help's order
class ExtractOptions:
    """``proxyless search extract``: each field one option (zoo.options)."""

    supernet: str | None = option(None, "supernet folder or hf-hub:ORG/REPO[@REV] (default: the bundled one)")
    subnet: str = option(MISSING, f"{', '.join(NAMED)} or d<depths>-k<kernels>-e<expands>")
    out: str = option(MISSING, "weights folder to write (new or empty)")
    force: bool = option(False, "replace a non-empty --out folder", switch=True)
    name: str | None = option(None, "the net's name (default: the --out folder's name)")
    data_dir: str | None = option(None, "dataset folder")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "extract",
        help="write one subnet of a trained supernet as a zoo weights folder (inherited weights, BN recalibrated)",
        description="The last line is JSON: the subnet and its inherited validation accuracy.",
    )
    add_options(p, ExtractOptions)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    with output_folder(args.out, force=args.force) as tmp:  # refused before the supernet is loaded
        folder = resolve_supernet(args.supernet)
        supernet, config = load_supernet(folder)
        subnet = parse_subnet(supernet.space, args.subnet)
        evaluator = SubnetEvaluator.for_supernet(supernet.space, config["metadata"]["recipe"], args.data_dir)
        top1 = evaluator.top1(supernet, subnet)
        name = args.name or Path(args.out).name
        write_subnet(supernet, config, subnet, evaluator, tmp, name, {"val_top1_inherited": top1}, f"{args.subnet}")
    print(f"wrote {args.out}: {subnet}, inherited val top-1 {top1 * 100:.2f}%")
    print(json.dumps({"subnet": str(subnet), "val_top1_inherited": top1, "out": args.out}))
    return 0
