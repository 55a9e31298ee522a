"""Peak memory and time of one search step in the supernet vs training the derived single net (same batch).

Steps compared, for a few sampled paths of the space (the "derived net" of a path is that path as a standalone
ProxylessNet, trained with the same SGD):
- ``weight``: a binarized-path weight step of the supernet (one candidate per layer runs);
- ``alpha_full_v2`` / ``alpha_two``: a ProxylessNAS-G alpha step (weights frozen, gate gradients recomputed);
- ``all_paths``: a DARTS-style step (every candidate runs, softmax-weighted; weights and alpha get gradients).

What is measured: on CUDA, ``torch.cuda.max_memory_allocated`` over the step (everything: weights, optimizer
state, activations, transients). On CPU, PyTorch's allocator reports nothing, so the figure is counted:
bytes of the distinct storages autograd saves for backward (``saved_tensors_hooks``; parameters excluded), plus
parameter, gradient and optimizer-state bytes (optimizer state as in steady state: a momentum buffer for every
parameter). Transient buffers inside ops (and the gate recomputation, which keeps nothing) are not counted there.
Both nets are counted the same way. The last line is JSON.
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

from search.gradient.gates import frozen_bn_stats, plan_gates
from search.gradient.objective import LatencyObjective
from search.gradient.search import frozen
from search.gradient.supernet import Supernet
from search.latency import load_latency_model
from search.space import get_space

MB = 1 << 20


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class Meter:
    """Peak bytes of one step of the model owning ``params`` (other models in memory are not counted).

    Persistent state is counted as in steady state: the parameters plus one momentum buffer each. On CUDA the
    rest is the allocator's peak above what was allocated before the step (activations, gradients, transients);
    on CPU it is the saved-for-backward storages plus the gradients (see the module docstring).
    """

    def __init__(self, device: torch.device, params: list[torch.Tensor]) -> None:
        self.device, self.params = device, params
        self.param_ptrs = {p.untyped_storage().data_ptr() for p in params}

    def measure(self, step: Callable[[], None]) -> float:
        for p in self.params:
            p.grad = None
        persistent = 2 * _bytes(self.params)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - before + persistent) / MB
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in self.param_ptrs:
                saved[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step()
        grads = [p.grad for p in self.params if p.grad is not None]
        return (sum(saved.values()) + persistent + _bytes(grads)) / MB


def prime(opt: torch.optim.Optimizer) -> None:
    """Create every optimizer state buffer up front (a zero-gradient, zero-lr step), so that no step allocates
    state and the steady-state accounting above does not count it twice."""
    lrs = [g["lr"] for g in opt.param_groups]
    for g in opt.param_groups:
        g["lr"] = 0.0
        for p in g["params"]:
            p.grad = torch.zeros_like(p)
    opt.step()
    for g, lr in zip(opt.param_groups, lrs, strict=True):
        g["lr"] = lr
        for p in g["params"]:
            p.grad = None


def run_step(step: Callable[[], None], meter: Meter, warm: bool = True) -> tuple[float, float]:
    """(seconds, MB) of one measured run of ``step``, after one untimed run unless ``warm`` is False."""
    if warm:
        step()
    start = time.perf_counter()
    mb = meter.measure(step)
    if meter.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, mb


def all_paths_forward(net: Supernet, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """DARTS-style: every candidate runs and keeps its activations; outputs mix under softmax(alpha)."""
    x = net.blocks[0](net.first_conv(x))
    for i, block in enumerate(net.blocks[1:]):
        ops = block.mobile_inverted_conv.candidate_ops
        out = sum(probs[i, j] * op(x) for j, op in enumerate(ops))  # the zero op adds 0
        x = out + x if block.residual else out
    return net.classifier(net.feature_mix_layer(x).mean((2, 3)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="fmnist")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--paths", type=int, default=2, help="sampled paths to compare (ratio = worst path)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    space = get_space(args.space)
    torch.manual_seed(args.seed)
    net = Supernet(space).to(device).train()
    net.init_alpha(1e-3, torch.Generator().manual_seed(args.seed))
    weights = list(net.weight_parameters())
    matrix, fixed = load_latency_model("flops", space).candidate_matrix(space)
    objective = LatencyObjective(matrix, fixed, 20.0, "mul#log").to(device)
    sgd = torch.optim.SGD(weights, lr=1e-3, momentum=0.9, nesterov=True, weight_decay=4e-5)
    adam = torch.optim.Adam([net.alpha], lr=1e-3, betas=(0.0, 0.999))
    prime(sgd)
    prime(adam)
    x = torch.randn(args.batch, space.in_chans, space.input_size, space.input_size, device=device)
    y = torch.randint(0, space.num_classes, (args.batch,), device=device)
    gen = torch.Generator().manual_seed(args.seed)
    super_meter = Meter(device, [*weights, net.alpha])

    def weight_step(path: list[int]) -> Callable[[], None]:
        def step() -> None:
            sgd.zero_grad(set_to_none=True)
            F.cross_entropy(net(x, path), y, label_smoothing=0.1).backward()
            sgd.step()

        return step

    def alpha_step(mode: str) -> Callable[[], None]:
        def step() -> None:
            adam.zero_grad(set_to_none=True)
            probs = net.probs()
            plans, _ = plan_gates(mode, probs, probs.detach().cpu(), net.counts, gen)
            with frozen(weights), frozen_bn_stats(net):
                ce = F.cross_entropy(net(x, [p.active for p in plans], plans), y)
                objective(ce, probs)[0].backward()
            adam.step()

        return step

    def all_paths_step() -> None:
        sgd.zero_grad(set_to_none=True)
        adam.zero_grad(set_to_none=True)
        probs = net.probs()
        ce = F.cross_entropy(all_paths_forward(net, x, probs), y, label_smoothing=0.1)
        objective(ce, probs)[0].backward()
        sgd.step()
        adam.step()

    rows = []
    for k in range(args.paths):
        path = torch.multinomial(net.probs().detach().cpu(), 1, generator=gen)[:, 0].tolist()
        single = net.extract(path, f"path{k}").to(device).train()
        sp = list(single.parameters())
        single_opt = torch.optim.SGD(sp, lr=1e-3, momentum=0.9, nesterov=True, weight_decay=4e-5)
        prime(single_opt)

        def single_step(single=single, single_opt=single_opt) -> None:
            single_opt.zero_grad(set_to_none=True)
            F.cross_entropy(single(x), y, label_smoothing=0.1).backward()
            single_opt.step()

        row = {"path": [str(b) for b in net.blocks_of(path)]}
        row["single_s"], row["single_mb"] = run_step(single_step, Meter(device, sp))
        # on CPU the single net's untimed run already primed this path's conv shapes: no second warm-up
        warm = device.type == "cuda"
        row["weight_s"], row["weight_mb"] = run_step(weight_step(path), super_meter, warm)
        for mode in ("full_v2", "two"):
            row[f"alpha_{mode}_s"], row[f"alpha_{mode}_mb"] = run_step(alpha_step(mode), super_meter, warm)
        row["ratio"] = max(row[f"{s}_mb"] for s in ("weight", "alpha_full_v2", "alpha_two")) / row["single_mb"]
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), file=sys.stderr)
        del single, single_opt

    all_s, all_mb = run_step(all_paths_step, super_meter, warm=device.type == "cuda")  # CPU: 6x a step, run once
    single_mb = statistics.mean(r["single_mb"] for r in rows)
    single_s = statistics.mean(r["single_s"] for r in rows)
    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "space": args.space,
        "batch": args.batch,
        "paths": args.paths,
        "measured": "cuda max_memory_allocated"
        if device.type == "cuda"
        else "saved-for-backward storages + params + grads + momentum (CPU count)",
        "ratio": round(max(r["ratio"] for r in rows), 3),
        "all_paths_ratio": round(all_mb / single_mb, 3),
        "step_time_ratio": round(statistics.mean(r["weight_s"] / r["single_s"] for r in rows), 3),
        "alpha_full_v2_time_ratio": round(statistics.mean(r["alpha_full_v2_s"] / r["single_s"] for r in rows), 3),
        "alpha_two_time_ratio": round(statistics.mean(r["alpha_two_s"] / r["single_s"] for r in rows), 3),
        "all_paths_time_ratio": round(all_s / single_s, 3),
        "single_mb": round(single_mb, 1),
        "weight_mb": round(max(r["weight_mb"] for r in rows), 1),
        "alpha_full_v2_mb": round(max(r["alpha_full_v2_mb"] for r in rows), 1),
        "alpha_two_mb": round(max(r["alpha_two_mb"] for r in rows), 1),
        "all_paths_mb": round(all_mb, 1),
        "single_step_s": round(single_s, 4),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
