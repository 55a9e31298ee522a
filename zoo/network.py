"""Build a network from an arch spec, and count what it costs (params, MACs)."""

from __future__ import annotations

import torch
from torch import nn

from zoo.arch import ArchSpec
from zoo.layers import ConvLayer, LinearClassifier, MBInvertedConv, MobileInvertedResidualBlock, ZeroLayer


class ProxylessNet(nn.Module):
    """first_conv -> blocks -> feature_mix_layer -> global average pool -> classifier (authors' names)."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        eps, mom = spec.bn_eps, spec.bn_momentum
        self.first_conv = ConvLayer(spec.in_chans, spec.stem_channels, spec.stem_kernel, spec.stem_stride, eps, mom)
        blocks, cin = [], spec.stem_channels
        for b in spec.blocks:
            if b.zero:
                blocks.append(MobileInvertedResidualBlock(ZeroLayer(), True))
                continue
            body = MBInvertedConv(cin, b.out_channels, b.kernel, b.stride, b.expand, eps, mom)
            blocks.append(MobileInvertedResidualBlock(body, b.residual))
            cin = b.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.feature_mix_layer = ConvLayer(cin, spec.feature_mix, 1, 1, eps, mom) if spec.feature_mix else None
        self.classifier = LinearClassifier(spec.head_channels, spec.num_classes, spec.dropout)
        self.info = None  # set by the registry: zoo.registry.ModelInfo

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        if self.feature_mix_layer is not None:
            x = self.feature_mix_layer(x)
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


def count_params(model: nn.Module) -> int:
    """Trainable parameters, the figure the paper reports."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _out(size: int, stride: int) -> int:
    return -(-size // stride)


def mbconv_macs(cin: int, cout: int, kernel: int, stride: int, expand: int, size: int) -> int:
    """Multiply-accumulates of one MBConv body on a size x size input (BN/activations excluded)."""
    mid, out = round(cin * expand), _out(size, stride)
    expand_macs = size * size * cin * mid if expand != 1 else 0
    return expand_macs + out * out * mid * kernel * kernel + out * out * mid * cout


def count_macs(spec: ArchSpec) -> int:
    """MACs of one forward pass at the spec's input size: convolutions and the classifier."""
    size = _out(spec.input_size, spec.stem_stride)
    total = size * size * spec.in_chans * spec.stem_channels * spec.stem_kernel**2
    cin = spec.stem_channels
    for b in spec.blocks:
        if b.zero:
            continue
        total += mbconv_macs(cin, b.out_channels, b.kernel, b.stride, b.expand, size)
        cin, size = b.out_channels, _out(size, b.stride)
    if spec.feature_mix:
        total += size * size * cin * spec.feature_mix
    return total + spec.head_channels * spec.num_classes
