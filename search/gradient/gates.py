"""Binary gates of ProxylessNAS-G: one path runs forward, yet every involved candidate gets a gate gradient.

The forward value of a mixed op is the active candidate's output ``o_a`` (binary gates g, g_a = 1). In backward,
the gate gradient of candidate j is dL/dg_j = <dL/dy, o_j(x)>: the active one from its saved output, the others
recomputed from the saved input without keeping their activations. The gradient is returned as the gradient of the
probabilities p that were passed in, so autograd through softmax yields the paper's
dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i) — and any other loss term on p (expected latency) adds to it.

Modes (the authors' ``MixedEdge.MODE``):
- ``two``: sample two candidates without replacement, run one of them (chosen by their renormalized pair
  probabilities); only the pair gets gate gradients; after the alpha step the pair's alphas are shifted so the
  pair's total probability, and so every unsampled probability, is unchanged (``rescale_pairs``).
- ``full_v2``: run the sampled candidate, recompute all others in backward for their gate gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

GRAD_MODES = ("two", "full_v2")


class GateError(ValueError):
    """An unknown gradient mode or an inconsistent gate plan."""


@dataclass(frozen=True)
class LayerGate:
    """The gate plan of one layer for one alpha step.

    ``involved[k]`` is a candidate index whose gate gradient is wanted; ``weights[k]`` its (differentiable)
    probability. ``active`` is the candidate that runs; it is one of ``involved``.
    """

    active: int
    involved: tuple[int, ...]
    weights: torch.Tensor


Recompute = Callable[[int, torch.Tensor], torch.Tensor]


class _BinaryGate(torch.autograd.Function):
    """Identity on ``carrier`` in forward; in backward, the gate gradients as the gradient of ``weights``."""

    @staticmethod
    def forward(ctx, carrier, x, weights, recompute, gate, zero_index):  # type: ignore[override]
        ctx.save_for_backward(carrier, x)
        ctx.recompute, ctx.gate, ctx.zero_index = recompute, gate, zero_index
        ctx.autocast = (x.device.type, torch.is_autocast_enabled(x.device.type))
        if ctx.autocast[1]:
            ctx.autocast += (torch.get_autocast_dtype(x.device.type),)
        return carrier.view_as(carrier)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        carrier, x = ctx.saved_tensors
        gate: LayerGate = ctx.gate
        device_type, enabled = ctx.autocast[:2]
        grads = []
        with torch.no_grad(), torch.autocast(device_type, ctx.autocast[2] if enabled else None, enabled=enabled):
            for idx in gate.involved:
                if idx == ctx.zero_index:  # the zero op outputs 0: its gate gradient is exactly 0
                    grads.append(grad.new_zeros((), dtype=torch.float32))
                    continue
                out = carrier if idx == gate.active else ctx.recompute(idx, x)
                grads.append(torch.sum(grad * out, dtype=torch.float32))
        grad_weights = torch.stack(grads).to(gate.weights.dtype) if ctx.needs_input_grad[2] else None
        return grad if ctx.needs_input_grad[0] else None, None, grad_weights, None, None, None


def binary_gate(
    carrier: torch.Tensor, x: torch.Tensor, gate: LayerGate, recompute: Recompute, zero_index: int | None
) -> torch.Tensor:
    """``carrier`` (the active candidate's output, or the block input when the zero op is active) with gates.

    ``recompute(idx, x)`` returns candidate ``idx``'s body output on ``x``; it is called in backward only.
    """
    if gate.active not in gate.involved or len(gate.weights) != len(gate.involved):
        raise GateError(f"bad gate plan: active {gate.active}, involved {gate.involved}, {len(gate.weights)} weights")
    return _BinaryGate.apply(carrier, x, gate.weights, recompute, gate, zero_index)


def sample_paths(probs: torch.Tensor, generator: torch.Generator) -> list[int]:
    """One candidate per layer from each row of ``probs`` [L, C] (CPU) — the path a weight step trains."""
    return torch.multinomial(probs, 1, generator=generator)[:, 0].tolist()


def sample_pairs(probs: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, list[int]]:
    """``two`` mode: per layer two candidates without replacement, then the active one of the pair.

    Returns the pairs [L, 2] (active first) and the active path.
    """
    pairs = torch.multinomial(probs, 2, replacement=False, generator=generator)
    pair_probs = probs.gather(1, pairs)
    first = torch.multinomial(pair_probs, 1, generator=generator)[:, 0]
    ordered = torch.where(first[:, None] == 0, pairs, pairs.flip(1))
    return ordered, ordered[:, 0].tolist()


def plan_gates(
    mode: str, probs: torch.Tensor, probs_cpu: torch.Tensor, counts: list[int], generator: torch.Generator
) -> tuple[list[LayerGate], torch.Tensor | None]:
    """Sample an alpha step's paths and the differentiable gate weights of every layer.

    ``probs`` [L, C] is softmax(alpha) (differentiable, any device), ``probs_cpu`` the same values on the CPU,
    ``counts[i]`` how many candidates layer i has (the rest of the row is padding). Returns the per-layer plans
    and, for ``two``, the pairs [L, 2] that ``rescale_pairs`` needs after the step.
    """
    if mode == "two":
        pairs, path = sample_pairs(probs_cpu, generator)
        weights = probs.gather(1, pairs.to(probs.device))
        weights = weights / weights.sum(1, keepdim=True)  # = softmax over the pair's alphas
        plans = [
            LayerGate(a, (a, b), weights[i]) for i, (a, b) in enumerate(zip(path, pairs[:, 1].tolist(), strict=True))
        ]
        return plans, pairs
    if mode == "full_v2":
        path = sample_paths(probs_cpu, generator)
        plans = [LayerGate(a, tuple(range(n)), probs[i, :n]) for i, (a, n) in enumerate(zip(path, counts, strict=True))]
        return plans, None
    raise GateError(f"unknown gradient mode {mode!r}; expected one of {', '.join(GRAD_MODES)}")


@torch.no_grad()
def rescale_pairs(alpha: torch.Tensor, pairs: torch.Tensor, old: torch.Tensor) -> None:
    """After a ``two``-mode step, shift each pair's alphas so their logsumexp is what it was before the step.

    The pair then holds the same total probability, so candidates outside the pair keep their probabilities (the
    authors' ``rescale_updated_arch_param``). ``old`` is ``alpha.gather(1, pairs)`` taken before the step.
    """
    pairs = pairs.to(alpha.device)
    new = alpha.gather(1, pairs)
    offset = torch.logsumexp(new, 1, keepdim=True) - torch.logsumexp(old, 1, keepdim=True)
    alpha.scatter_(1, pairs, new - offset)


@contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """BN layers in ``module`` normalize with batch statistics but leave their running statistics unchanged.

    Alpha steps and gate recomputation see validation data; it must not leak into the weights' BN statistics.
    Momentum 0 makes the running-average update a no-op; ``num_batches_tracked`` is set aside meanwhile (BN skips
    counting when it is None), so a checkpoint's BN state is what the weight steps alone made of it.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked) for m in bns]
    for m in bns:
        m.momentum, m.num_batches_tracked = 0.0, None
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(bns, saved, strict=True):
            m.momentum, m.num_batches_tracked = momentum, tracked
