"""Does evolution beat random search at the same budget? Three targets on each of three latency tables.

For each table (this CPU's ONNX Runtime table, the Pixel-1 predictor, the H200 table) and each factor of the
baseline subnet's latency there (0.5, 0.75, 1.0), evolution and random search with the same number of predictor
evaluations run for several seeds; their best estimated accuracies (the supernet's accuracy predictor) and
latencies are printed, with whether every result meets its limit. No net is written: this measures the search,
``proxyless search specialize`` makes the nets. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.elastic.evolution import EvolutionConfig
from search.elastic.latency import SubnetLatency
from search.elastic.predictor import encode, load_predictor
from search.elastic.specialize import SpecializeConfig, run_search
from search.elastic.store import load_supernet, resolve_supernet
from zoo.files import atomic_write


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--supernet", help="supernet folder or hf-hub:ORG/REPO (default: the bundled one)")
    p.add_argument("--luts", default="cpu,mobile,gpu", help="latency tables")
    p.add_argument("--factors", default="0.5,0.75,1.0", help="targets as fractions of the baseline's latency")
    p.add_argument("--seeds", type=int, default=5, help="searches per method and target")
    p.add_argument("--population", type=int, default=EvolutionConfig.population)
    p.add_argument("--generations", type=int, default=EvolutionConfig.generations)
    p.add_argument("--out", type=Path, help="also write the JSON summary to this file")
    args = p.parse_args()
    folder = resolve_supernet(args.supernet)
    supernet, _ = load_supernet(folder)
    space = supernet.space
    found = load_predictor(space, folder)
    if found is None:
        p.error(f"{folder} has no accuracy predictor: run `proxyless search elastic-predictor --supernet {folder}`")
    predictor = found[0]

    def score(subnets: list) -> list[float]:
        with torch.no_grad():
            return predictor(encode(space, subnets)).tolist()

    rows = []
    for lut in args.luts.split(","):
        latency = SubnetLatency.load(space, lut)
        for factor in (float(f) for f in args.factors.split(",")):
            limit = factor * latency(space.baseline())
            best: dict[str, list[float]] = {"evolution": [], "random": []}
            meets = True
            for seed in range(args.seeds):
                for method in best:
                    cfg = SpecializeConfig(
                        lut=lut,
                        out="",
                        factor=factor,
                        random=method == "random",
                        seed=seed,
                        population=args.population,
                        generations=args.generations,
                    )
                    result = run_search(cfg, space, score, latency, limit)
                    best[method].append(result.best.score)
                    meets &= all(c.latency <= limit for c in result.population)
            row = {
                "lut": lut,
                "factor": factor,
                "limit": round(limit, 4),
                "evaluations": result.evaluations,
                "evolution_mean": statistics.mean(best["evolution"]),
                "random_mean": statistics.mean(best["random"]),
                "evolution_wins": sum(e > r for e, r in zip(best["evolution"], best["random"], strict=True)),
                "seeds": args.seeds,
                "all_meet_limit": meets,
            }
            rows.append(row)
            print(
                f"{lut:>6} x{factor:<4} evolution {row['evolution_mean'] * 100:.2f}% vs random "
                f"{row['random_mean'] * 100:.2f}% (evolution better in {row['evolution_wins']}/{args.seeds} seeds), "
                f"limits met: {meets}",
                flush=True,
            )
    summary = {
        "rows": rows,
        "evolution_beats_random_everywhere": all(r["evolution_mean"] > r["random_mean"] for r in rows),
        "all_meet_limit": all(r["all_meet_limit"] for r in rows),
    }
    if args.out:
        atomic_write(args.out, json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
