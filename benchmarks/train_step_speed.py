"""Time one stand-alone training step of a zoo arch three ways: as ``search train`` runs it (channels-last), in
the contiguous layout, and channels-last under ``torch.compile``.

A step is what ``proxyless search train`` does per batch (forward, label-smoothed cross-entropy, backward, SGD
with Nesterov momentum), on real Fashion-MNIST batches from the training loader (augmented as the recipe does);
the loader's own time per batch is timed too, since it runs on the same cores. The variants' steps are interleaved
(round robin) so machine noise hits all alike; medians are printed with their ratio to the trainer's own
(``channels_last``). ``compile`` is timed
after its warm-up (its compile seconds are printed apart). The last line is JSON.

    python benchmarks/train_step_speed.py --arch zoo/pretrained/fmnist_proxyless_cpu --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.training.data import Augment, build_train_data
from search.training.train import resolve_arch
from zoo.registry import build_network

VARIANTS = ("channels_last", "contiguous", "compile")  # the first: what search train does


def make_step(spec: object, variant: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
    torch.manual_seed(0)
    net = build_network(spec).train()
    nhwc = variant != "contiguous"
    if nhwc:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    forward = torch.compile(net) if variant == "compile" else net

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(forward(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="zoo/pretrained/fmnist_proxyless_cpu", help="as `search train --arch` takes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=5, help="steps per variant in a round")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = ap.parse_args()
    variants = args.variants.split(",")
    if unknown := sorted(set(variants) - set(VARIANTS)):
        ap.error(f"--variants: unknown {', '.join(unknown)} (choose from {', '.join(VARIANTS)})")
    torch.set_num_threads(args.threads)
    spec = resolve_arch(args.arch)
    data = build_train_data("fashion-mnist", None, args.batch_size, input_size=28, augment=Augment(2, True, 0.25))
    batches, loader_s = [], []
    tick = time.perf_counter()
    for x, y in data.train:
        loader_s.append(time.perf_counter() - tick)
        batches.append((x, y))
        if len(batches) == args.steps:
            break
        tick = time.perf_counter()
    steps, compile_s = {}, {}
    for v in variants:
        tick = time.perf_counter()
        steps[v] = make_step(spec, v)
        for x, y in batches[:2]:  # warm-up; compiles the forward and backward graphs
            steps[v](x, y)
        compile_s[v] = round(time.perf_counter() - tick, 2)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants[r % len(variants) :] + variants[: r % len(variants)]:
            for x, y in batches:
                tick = time.perf_counter()
                steps[v](x, y)
                times[v].append(time.perf_counter() - tick)
    median = {v: round(statistics.median(t), 4) for v, t in times.items()}
    result = {
        "benchmark": "train_step_speed",
        "arch": args.arch,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "step_seconds_median": median,
        "speedup_vs_trainer": {v: round(median[VARIANTS[0]] / s, 3) for v, s in median.items()}
        if VARIANTS[0] in median
        else {},
        "loader_seconds_per_batch": round(statistics.median(loader_s), 4),
        "warmup_seconds": compile_s,
        "steps_timed": {v: len(t) for v, t in times.items()},
    }
    for v in variants:
        print(f"{v:>14}: {median[v]:.3f} s a step (warm-up {compile_s[v]:.1f} s)")
    print(f"{'loader':>14}: {result['loader_seconds_per_batch']:.3f} s a batch")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
