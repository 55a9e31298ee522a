"""The ops a table times: their keys for a search space or an arch, and each op built alone as a module.

An arch decomposes into stem, one op per block (the space's first block included), feature mix (1x1 conv) and
classifier (global pool + linear, as the authors' ``Logits`` entries); the sum of their latencies is the table's
prediction for the arch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from search.latency.lut import LatencyError, OpKey
from search.space import Layer, SearchSpace
from zoo.arch import ArchSpec, BlockSpec
from zoo.layers import ConvLayer, MBInvertedConv, MobileInvertedResidualBlock
from zoo.network import mbconv_macs


def _out(size: int, stride: int) -> int:
    return -(-size // stride)


def block_key(block: BlockSpec, in_channels: int, size: int) -> OpKey:
    """Key of one block (or the zero op) on a ``in_channels`` x size x size input."""
    if block.zero:
        shape = (in_channels, size, size)
        return OpKey("zero", shape, shape, skip=True)
    out = _out(size, block.stride)
    return OpKey(
        "mbconv",
        (in_channels, size, size),
        (block.out_channels, out, out),
        kernel=block.kernel,
        expand=block.expand,
        stride=block.stride,
        skip=block.residual,
    )


def layer_key(layer: Layer, block: BlockSpec) -> OpKey:
    return block_key(block, layer.in_channels, layer.input_size)


@dataclass(frozen=True)
class ArchOps:
    """An arch as table keys: the fixed ops (stem, feature mix, classifier) and one key per block."""

    stem: OpKey
    blocks: tuple[tuple[str, OpKey], ...]
    feature_mix: OpKey
    classifier: OpKey


def arch_ops(arch: ArchSpec) -> ArchOps:
    if not arch.feature_mix:
        raise LatencyError(f"arch {arch.name} has no feature mix layer; tables time feature mix + pool as one op")
    size = _out(arch.input_size, arch.stem_stride)
    stem = OpKey(
        "stem",
        (arch.in_chans, arch.input_size, arch.input_size),
        (arch.stem_channels, size, size),
        kernel=arch.stem_kernel,
        stride=arch.stem_stride,
    )
    blocks, cin = [], arch.stem_channels
    for b in arch.blocks:
        blocks.append((str(b), block_key(b, cin, size)))
        if not b.zero:
            cin, size = b.out_channels, _out(size, b.stride)
    mix = OpKey("feature_mix", (cin, size, size), (arch.feature_mix, size, size))
    classifier = OpKey("classifier", (arch.feature_mix, size, size), (arch.num_classes,))
    return ArchOps(stem, tuple(blocks), mix, classifier)


def space_ops(space: SearchSpace) -> list[OpKey]:
    """Every distinct op a table of ``space`` needs: stem, first block, all layer candidates, feature mix, classifier.

    Ordered as a network runs; layers of equal shape share their keys.
    """
    fixed = arch_ops(space.uniform(space.expands[0], space.kernels[0], "probe"))
    keys = [fixed.stem, fixed.blocks[0][1]]
    keys += [layer_key(layer, b) for layer in space.layers() for b in space.candidates(layer)]
    keys += [fixed.feature_mix, fixed.classifier]
    return list(dict.fromkeys(keys))


class _PoolLinear(nn.Module):
    """Global average pool then the linear layer: the authors' ``Logits`` entry, as ``ProxylessNet`` ends."""

    def __init__(self, cin: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean((2, 3)))


def build_op(key: OpKey) -> nn.Module:
    """The op alone, in eval mode, with the same layers the network uses (BN values do not change the time)."""
    cin = key.input[0]
    if key.op == "stem":
        module: nn.Module = ConvLayer(cin, key.output[0], key.kernel, key.stride, 1e-3, 0.1)
    elif key.op == "mbconv":
        body = MBInvertedConv(cin, key.output[0], key.kernel, key.stride, key.expand)
        module = MobileInvertedResidualBlock(body, key.skip)
    elif key.op == "feature_mix":
        module = ConvLayer(cin, key.output[0], 1, 1, 1e-3, 0.1)
    elif key.op == "classifier":
        module = _PoolLinear(cin, key.output[0])
    else:
        raise LatencyError(f"op {key} runs nothing; it is not timed")
    return module.eval()


def is_timed(key: OpKey) -> bool:
    return key.op != "zero"


def op_macs(key: OpKey) -> int:
    """Multiply-accumulates of the op at batch 1, counted as ``zoo.network.count_macs`` counts them."""
    cin, size = key.input[0], key.input[-1]
    if key.op == "stem":
        out = key.output[-1]
        return out * out * cin * key.output[0] * key.kernel**2
    if key.op == "mbconv":
        return mbconv_macs(cin, key.output[0], key.kernel, key.stride, key.expand, size)
    if key.op == "feature_mix":
        return size * size * cin * key.output[0]
    if key.op == "classifier":
        return cin * key.output[0]
    return 0
