"""ProxylessNAS-G against the elastic route on equal terms, for one latency table at the targets of its searches.

Each ``--gradient FACTOR=ARCH`` is the net a gradient search derived under FACTOR x the baseline's latency on the
table (its ``arch.json``, from ``make fmnist-search FACTOR=...``). The elastic route specializes the supernet at
the same factor (``specialize``, written under ``--nets`` and reused when there). Both nets and the baseline
(``fmnist_mobilenetv2``'s subnet) are then scored alike: inherited top-1 on the supernet's validation split after
the same BN recalibration (a gradient net's arch is a subnet of the elastic space: its zero ops are skipped
layers), the table's predicted latency, and, for a table measured on this machine's kind of device, latency
measured with the table's runtime and settings, every net interleaved in one run. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.elastic.evaluate import SubnetEvaluator
from search.elastic.latency import SubnetLatency
from search.elastic.space import ElasticSpace, Subnet
from search.elastic.specialize import SpecializeConfig, specialize
from search.elastic.store import load_supernet, resolve_supernet
from search.training.stats import mcnemar
from zoo import create_model
from zoo.arch import ArchSpec
from zoo.files import atomic_write


def gradient_arg(text: str) -> tuple[float, Path]:
    factor, sep, path = text.partition("=")
    arch = Path(path) / "arch.json" if Path(path).is_dir() else Path(path)
    try:
        value = float(factor)
    except ValueError:
        value = 0.0
    if not sep or value <= 0:
        raise argparse.ArgumentTypeError(f"expected FACTOR=ARCH (e.g. 0.75=runs/s/arch.json), got {text!r}")
    if not arch.is_file():
        raise argparse.ArgumentTypeError(f"no arch file at {arch}")
    return value, arch


def verdict(acc_gradient: float, acc_elastic: float, p: float, ms_gradient: float, ms_elastic: float) -> str:
    """The rule of docs/latency-loss.md: more accurate (McNemar p < 0.05) and at most 5% slower, or as accurate
    (p >= 0.05) and at least 10% faster; else a tie."""
    if p < 0.05:
        better, worse = ("elastic", "gradient") if acc_elastic > acc_gradient else ("gradient", "elastic")
        ms = {"elastic": ms_elastic, "gradient": ms_gradient}
        return better if ms[better] <= 1.05 * ms[worse] else "tie"
    if ms_elastic <= 0.9 * ms_gradient:
        return "elastic"
    return "gradient" if ms_gradient <= 0.9 * ms_elastic else "tie"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gradient", type=gradient_arg, action="append", required=True, metavar="FACTOR=ARCH")
    p.add_argument("--supernet", help="supernet folder or hf-hub:ORG/REPO (default: the bundled one)")
    p.add_argument("--lut", default="cpu", help="the latency table the gradient searches used")
    p.add_argument("--out", default="runs/search_head_to_head", help="folder of head_to_head.json")
    p.add_argument("--nets", default="runs/search_head_to_head", help="folder of the elastic route's nets (weights)")
    p.add_argument("--population", type=int, default=100)
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--budget-s", type=float, default=20.0, help="measurement time over all nets")
    p.add_argument("--data-dir")
    args = p.parse_args()
    out = Path(args.out)
    folder = resolve_supernet(args.supernet)
    supernet, meta = load_supernet(folder)
    space: ElasticSpace = supernet.space
    latency = SubnetLatency.load(space, args.lut)
    gradient = {f: space.subnet_of(ArchSpec.from_json(a.read_text())) for f, a in sorted(args.gradient)}
    elastic: dict[float, Subnet] = {}
    seconds: dict[float, float] = {}
    for factor in gradient:
        net = Path(args.nets) / f"elastic_{factor}"
        if not (net / "specialize.json").is_file():
            cfg = SpecializeConfig(
                lut=args.lut,
                out=str(net),
                supernet=args.supernet,
                factor=factor,
                population=args.population,
                generations=args.generations,
                data_dir=args.data_dir,
            )
            specialize(cfg, "benchmarks/search_head_to_head.py")
        seconds[factor] = json.loads((net / "specialize.json").read_text())["seconds"]
        elastic[factor] = space.subnet_of(create_model(str(net)).info.arch)
    ev = SubnetEvaluator.for_supernet(space, meta["metadata"]["recipe"], args.data_dir)
    nets = {"baseline": space.baseline()}
    for factor in gradient:
        nets[f"gradient_{factor}"], nets[f"elastic_{factor}"] = gradient[factor], elastic[factor]
    right = {name: ev.answers(supernet, s).numpy() for name, s in nets.items()}
    top1 = {name: float(r.mean()) for name, r in right.items()}
    measured = latency.measure([space.arch(s, name) for name, s in nets.items()], args.budget_s)
    rows = {
        name: {
            "subnet": str(s),
            "val_top1_inherited": top1[name],
            "predicted": round(latency(s), 4),
            "measured_ms": measured[i] if measured else None,
        }
        for i, (name, s) in enumerate(nets.items())
    }
    base = latency(space.baseline())
    targets = {}
    for f in gradient:
        test = mcnemar(right[f"gradient_{f}"], right[f"elastic_{f}"])
        ms = {k: rows[f"{k}_{f}"]["measured_ms"] or rows[f"{k}_{f}"]["predicted"] for k in ("gradient", "elastic")}
        targets[str(f)] = {
            "limit": round(f * base, 4),
            "elastic_minus_gradient_points": round((top1[f"elastic_{f}"] - top1[f"gradient_{f}"]) * 100, 2),
            "mcnemar": test,
            "winner": verdict(top1[f"gradient_{f}"], top1[f"elastic_{f}"], test["p"], ms["gradient"], ms["elastic"]),
            "elastic_specialize_seconds": seconds[f],
        }
    summary = {
        "lut": args.lut,
        "unit": latency.unit,
        "supernet_sha256": meta["weights_sha256"],
        "nets": rows,
        "targets": targets,
    }
    atomic_write(out / "head_to_head.json", json.dumps(summary, indent=1) + "\n")
    for name, r in rows.items():
        ms = f", measured {r['measured_ms']} ms" if r["measured_ms"] is not None else ""
        acc = r["val_top1_inherited"] * 100
        print(f"{name:>14}: {r['subnet']}  val {acc:.2f}%, {r['predicted']} {latency.unit}{ms}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
