"""Start a ProxylessNAS supernet from a trained elastic (Once-for-All style) supernet instead of random weights.

Why: the searched supernet keeps separate weights per candidate, and training them on uniformly sampled paths is
slow. In the 1.0x Fashion-MNIST searches the 3-epoch warm-up ended at 32% train top-1 and the searches at 49-52%, so
alpha learned from a barely trained net. The elastic supernet (``docs/elastic.md``) is trained over the same layers
and holds a weight for every candidate (kernel k, expand e): candidate (k, e) of layer i starts as the elastic op's
slice at (k, e), the stem, first block and head are copied, and from there the candidates train apart. Zero ops have
no weights.
"""

from __future__ import annotations

import torch

from search.elastic.supernet import ElasticSupernet
from search.gradient.supernet import Supernet
from search.space import Layer


class WarmStartError(ValueError):
    """The elastic supernet does not fit the search space."""


def _geometry(layers: list[Layer]) -> list[tuple[int, int, int, bool]]:
    return [(ly.in_channels, ly.out_channels, ly.stride, ly.residual) for ly in layers]


@torch.no_grad()
def init_from_elastic(net: Supernet, elastic: ElasticSupernet) -> int:
    """Copy ``elastic``'s weights into every candidate of ``net`` (alpha untouched); returns the candidates set."""
    mine, theirs = _geometry(net.space.layers()), _geometry(elastic.space.layers())
    if mine != theirs:
        raise WarmStartError(
            f"elastic supernet {elastic.space.name!r} has layers (in, out, stride, residual) {theirs}, "
            f"search space {net.space.name!r} has {mine}"
        )
    state = elastic.fixed_state()
    copied = 0
    for i, candidates in enumerate(net.candidates):
        source = elastic.blocks[i + 1].mobile_inverted_conv
        for j, block in enumerate(c for c in candidates if not c.zero):
            if block.kernel not in elastic.space.kernels or block.expand not in elastic.space.expands:
                raise WarmStartError(
                    f"layer {i}: candidate k{block.kernel} e{block.expand} is not in the elastic space "
                    f"(kernels {elastic.space.kernels}, expands {elastic.space.expands})"
                )
            prefix = f"blocks.{i + 1}.mobile_inverted_conv.candidate_ops.{j}."
            for key, value in source.sliced_state(block.kernel, block.expand).items():
                state[prefix + key] = value
            copied += 1
    state["alpha"] = net.alpha.detach().clone()
    net.load_state_dict(state, strict=True)
    return copied
