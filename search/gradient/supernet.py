"""The over-parameterized network of a search space: every searchable layer is a mixed op of its candidates.

Binarized paths: a forward pass takes one candidate index per layer and runs only that candidate, so only its
activations are kept and only its weights get gradients (the others' ``.grad`` stays None, so SGD gives them no
weight decay and no momentum update). Architecture parameters ``alpha`` are one [L, C] tensor, rows padded to the
largest candidate count (padding masked out of the softmax), candidates in ``space.candidates(layer)`` order —
the layout of the latency model's ``candidate_matrix``.

Weights start as the authors' search (``model_init='he_fout'``, ``init_div_groups`` off): see ``he_fout_init``.

Module names follow the authors' supernet (``blocks.N.mobile_inverted_conv.candidate_ops.M``), so a derived net's
weights are the chosen candidates' weights renamed (``extract``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from search.gradient.gates import LayerGate, binary_gate, frozen_bn_stats
from search.space import Layer, SearchSpace
from zoo.arch import BlockSpec
from zoo.layers import ConvLayer, LinearClassifier, MBInvertedConv, MobileInvertedResidualBlock
from zoo.network import ProxylessNet


def he_fout_init(module: nn.Module) -> None:
    """The authors' supernet initialization: conv weights ~ N(0, 2 / (k * k * out_channels)) (fan-out, groups not
    divided out, so depthwise convs start small), BN scale 1 and shift 0, linear weights ~ U(+-1/sqrt(in)) and
    biases 0. PyTorch's default (fan-in, uniform) starts the searched layers at another scale."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.weight.size(1))
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MixedOp(nn.Module):
    """The candidates of one layer; candidate ``i`` is ``candidate_ops[i]``, the zero op (if any) is last."""

    def __init__(self, layer: Layer, candidates: list[BlockSpec], eps: float, momentum: float) -> None:
        super().__init__()
        ops = [c for c in candidates if not c.zero]
        self.candidate_ops = nn.ModuleList(
            MBInvertedConv(layer.in_channels, c.out_channels, c.kernel, c.stride, c.expand, eps, momentum) for c in ops
        )
        self.zero_index = len(ops) if len(ops) < len(candidates) else None

    def recompute(self, idx: int, x: torch.Tensor) -> torch.Tensor:
        """Candidate ``idx``'s output for a gate gradient: no graph kept, BN running statistics untouched."""
        op = self.candidate_ops[idx]
        with frozen_bn_stats(op):
            return op(x)


class MixedBlock(nn.Module):
    """A mixed op plus the identity shortcut where the layer has one; the zero op returns the input."""

    def __init__(self, layer: Layer, candidates: list[BlockSpec], eps: float, momentum: float) -> None:
        super().__init__()
        self.mobile_inverted_conv = MixedOp(layer, candidates, eps, momentum)
        self.residual = layer.residual

    def forward(self, x: torch.Tensor, choice: int, gate: LayerGate | None = None) -> torch.Tensor:
        op = self.mobile_inverted_conv
        zero = choice == op.zero_index
        if gate is None:
            if zero:
                return x
            out = op.candidate_ops[choice](x)
            return out + x if self.residual else out
        if zero:  # body output is 0, block output is x: the gate sees dL/dy on x itself
            return binary_gate(x, x, gate, op.recompute, op.zero_index)
        out = binary_gate(op.candidate_ops[choice](x), x, gate, op.recompute, op.zero_index)
        return out + x if self.residual else out


class Supernet(nn.Module):
    """first_conv -> fixed first block -> mixed blocks -> feature_mix_layer -> pool -> classifier, plus alpha."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        eps, mom = space.bn_eps, space.bn_momentum
        first = space.first
        layers = space.layers()
        self.candidates = [space.candidates(layer) for layer in layers]
        self.first_conv = ConvLayer(space.in_chans, space.stem_channels, 3, space.stem_stride, eps, mom)
        first_body = MBInvertedConv(
            space.stem_channels, first.out_channels, first.kernel, first.stride, first.expand, eps, mom
        )
        blocks: list[nn.Module] = [MobileInvertedResidualBlock(first_body, first.residual)]
        blocks += [MixedBlock(layer, cands, eps, mom) for layer, cands in zip(layers, self.candidates, strict=True)]
        self.blocks = nn.ModuleList(blocks)
        self.feature_mix_layer = ConvLayer(layers[-1].out_channels, space.feature_mix, 1, 1, eps, mom)
        self.classifier = LinearClassifier(space.feature_mix, space.num_classes, 0.0)
        self.counts = [len(c) for c in self.candidates]
        width = max(self.counts)
        valid = torch.arange(width)[None, :] < torch.tensor(self.counts)[:, None]
        self.register_buffer("valid", valid, persistent=False)
        self.alpha = nn.Parameter(torch.zeros(len(layers), width))
        he_fout_init(self)

    def init_alpha(self, std: float = 1e-3, generator: torch.Generator | None = None) -> None:
        """alpha ~ N(0, std) (the paper: 1e-3), i.e. near-uniform initial probabilities."""
        with torch.no_grad():
            self.alpha.copy_(torch.randn(self.alpha.shape, generator=generator) * std)

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        return (p for name, p in self.named_parameters() if name != "alpha")

    def probs(self) -> torch.Tensor:
        """softmax(alpha) per layer [L, C]; padding columns are exactly 0."""
        return torch.softmax(self.alpha.masked_fill(~self.valid, float("-inf")), dim=1)

    def forward(self, x: torch.Tensor, path: Sequence[int], gates: Sequence[LayerGate] | None = None) -> torch.Tensor:
        """Run the candidates ``path`` (one index per searchable layer); ``gates`` adds gate gradients."""
        if len(path) != len(self.counts):
            raise ValueError(f"path has {len(path)} choices, the supernet has {len(self.counts)} layers")
        x = self.blocks[0](self.first_conv(x))
        for i, block in enumerate(self.blocks[1:]):
            x = block(x, path[i], None if gates is None else gates[i])
        x = self.feature_mix_layer(x).mean((2, 3))
        return self.classifier(x)

    def argmax_path(self) -> list[int]:
        """The derived architecture: the most probable candidate of every layer."""
        return self.probs().argmax(1).tolist()

    def blocks_of(self, path: Sequence[int]) -> list[BlockSpec]:
        return [cands[i] for cands, i in zip(self.candidates, path, strict=True)]

    def extract(self, path: Sequence[int], name: str = "derived") -> ProxylessNet:
        """The single network of ``path`` with the supernet's weights of the chosen candidates."""
        net = ProxylessNet(self.space.arch(self.blocks_of(path), name))
        prefix = "blocks.{}.mobile_inverted_conv."
        state = {}
        for key, value in self.state_dict().items():
            if key == "alpha":
                continue
            parts = key.split(".")
            if parts[0] == "blocks" and parts[1] != "0":
                i = int(parts[1])
                if parts[3] != "candidate_ops" or int(parts[4]) != path[i - 1]:
                    continue
                key = prefix.format(i) + ".".join(parts[5:])
            state[key] = value
        net.load_state_dict(state, strict=True)
        return net
