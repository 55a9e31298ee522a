"""The elastic supernet: stem, fixed first block, elastic layers, head; any subnet runs on the shared weights.

``forward(x, subnet)`` runs the subnet's layers (the first ``d`` of each stage) at their kernel and expand ratio.
``extract(subnet)`` writes the same function as a plain ``ProxylessNet`` (weights sliced and copied), which the
zoo saves, exports and serves. ``recalibrate_bn`` replaces a network's BN running statistics by exact averages over
a few batches: during training they mixed every subnet, so a subnet is evaluated only after this.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from search.elastic.layers import ElasticMBConv
from search.elastic.space import ElasticSpace, Subnet
from zoo.layers import ConvLayer, LinearClassifier, MBInvertedConv, MobileInvertedResidualBlock
from zoo.network import ProxylessNet


class ElasticBlock(nn.Module):
    """An elastic op plus the identity shortcut where the layer has one."""

    def __init__(self, op: ElasticMBConv, residual: bool) -> None:
        super().__init__()
        self.mobile_inverted_conv = op
        self.residual = residual

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        out = self.mobile_inverted_conv(x, kernel, expand)
        return out + x if self.residual else out


class ElasticSupernet(nn.Module):
    """first_conv -> blocks[0] (fixed) -> elastic blocks -> feature_mix_layer -> pool -> classifier."""

    def __init__(self, space: ElasticSpace) -> None:
        super().__init__()
        self.space = space
        b = space.backbone
        eps, mom = b.bn_eps, b.bn_momentum
        first = b.first
        self.first_conv = ConvLayer(b.in_chans, b.stem_channels, 3, b.stem_stride, eps, mom)
        body = MBInvertedConv(b.stem_channels, first.out_channels, first.kernel, first.stride, first.expand, eps, mom)
        blocks: list[nn.Module] = [MobileInvertedResidualBlock(body, first.residual)]
        for ly in space.layers():
            op = ElasticMBConv(ly.in_channels, ly.out_channels, ly.stride, space.kernels, space.expands, eps, mom)
            blocks.append(ElasticBlock(op, ly.residual))
        self.blocks = nn.ModuleList(blocks)
        self.feature_mix_layer = ConvLayer(space.layers()[-1].out_channels, b.feature_mix, 1, 1, eps, mom)
        self.classifier = LinearClassifier(b.feature_mix, b.num_classes, 0.0)

    def forward(self, x: torch.Tensor, subnet: Subnet) -> torch.Tensor:
        x = self.blocks[0](self.first_conv(x))
        for i in self.space.active(subnet):
            x = self.blocks[i + 1](x, subnet.kernels[i], subnet.expands[i])
        x = self.feature_mix_layer(x).mean((2, 3))
        return self.classifier(x)

    @torch.no_grad()
    def fixed_state(self) -> dict[str, torch.Tensor]:
        """Copies of the tensors every subnet uses whole: stem, first block and head (names as in a zoo network)."""
        return {
            key: value.clone()
            for key, value in self.state_dict().items()
            if not key.startswith("blocks.") or key.startswith("blocks.0.")
        }

    @torch.no_grad()
    def extract(self, subnet: Subnet, name: str = "subnet") -> ProxylessNet:
        """The subnet as a stand-alone zoo network with the supernet's (sliced, copied) weights."""
        net = ProxylessNet(self.space.arch(subnet, name))
        state = self.fixed_state()
        for j, i in enumerate(self.space.active(subnet), start=1):
            op = self.blocks[i + 1].mobile_inverted_conv
            for key, value in op.sliced_state(subnet.kernels[i], subnet.expands[i]).items():
                state[f"blocks.{j}.mobile_inverted_conv.{key}"] = value
        net.load_state_dict(state, strict=True)
        return net.to(next(self.parameters()).device)


@torch.no_grad()
def recalibrate_bn(net: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Set every BN's running mean/var to the average of its exact batch statistics over ``batches``.

    Momentum ``None`` makes PyTorch keep a cumulative average; the net is left in eval mode. Returns the number
    of images seen. Dropout is off (train mode is set on the BN layers only).
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    net.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        for x in batches:
            net(x)
            seen += len(x)
    finally:
        for m, momentum in zip(bns, saved, strict=True):
            m.momentum = momentum
            m.eval()
    return seen
