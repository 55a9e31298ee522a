"""Time one sandwich-rule training step of elastic spaces of different depths (the cost that fixed the space).

For each max-depth setting of the fmnist backbone (``--depths 2332,3443``) one step is: the largest subnet with
the label loss, then the smallest and two random subnets distilled from it, then SGD; also the largest subnet
alone. Steps of the settings are interleaved (round robin) so machine noise hits all alike; medians are printed
with their ratio to the first setting. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.elastic.space import ElasticSpace
from search.elastic.supernet import ElasticSupernet
from search.space import SPACES
from zoo.network import count_macs


def make_step(depths: tuple[int, ...], batch: int) -> tuple[ElasticSpace, dict]:
    space = ElasticSpace("timed", replace(SPACES["fmnist"], depths=depths), min_depths=(1,) * len(depths))
    net = ElasticSupernet(space).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    rng = random.Random(0)

    def sandwich() -> None:
        opt.zero_grad()
        logits = net(x, space.largest())
        F.cross_entropy(logits, y).backward()
        soft = logits.detach().softmax(1)
        for s in (space.smallest(), space.sample(rng), space.sample(rng)):
            (-(soft * net(x, s).log_softmax(1)).sum(1).mean()).backward()
        opt.step()

    def largest() -> None:
        opt.zero_grad()
        F.cross_entropy(net(x, space.largest()), y).backward()
        opt.step()

    return space, {"sandwich": sandwich, "largest": largest}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", default="2332,3443", help="comma-separated max depths per stage")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    settings = {d: make_step(tuple(int(c) for c in d), args.batch) for d in args.depths.split(",")}
    times: dict[tuple[str, str], list[float]] = {(d, k): [] for d, (_, fs) in settings.items() for k in fs}
    for _, fs in settings.values():  # warm-up
        for f in fs.values():
            f()
    for _ in range(args.repeats):
        for d, (_, fs) in settings.items():
            for k, f in fs.items():
                t = time.perf_counter()
                f()
                times[d, k].append(time.perf_counter() - t)
    first = next(iter(settings))
    rows = []
    for d, (space, _) in settings.items():
        row = {"depths": d, "largest_macs_m": round(count_macs(space.arch(space.largest())) / 1e6, 1)}
        for k in ("sandwich", "largest"):
            median = statistics.median(times[d, k])
            row[f"{k}_s"] = round(median, 3)
            row[f"{k}_ratio"] = round(median / statistics.median(times[first, k]), 3)
        rows.append(row)
        print(
            f"depths {d}: sandwich step {row['sandwich_s']} s ({row['sandwich_ratio']}x), largest alone "
            f"{row['largest_s']} s, largest subnet {row['largest_macs_m']}M MACs"
        )
    print(json.dumps({"batch": args.batch, "threads": args.threads, "repeats": args.repeats, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
