"""Layers of the ProxylessNAS networks, with the authors' module names so their state_dicts load strictly."""

from __future__ import annotations

import torch
from torch import nn


def bn2d(channels: int, eps: float, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


class ConvLayer(nn.Module):
    """conv -> BN -> ReLU6 (authors' ``weight_bn_act``); ``bn`` is registered first, as in their state_dicts."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.bn = bn2d(cout, eps, momentum)
        self.act = nn.ReLU6(inplace=True)
        self.conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ConvBN(nn.Sequential):
    """conv -> BN [-> ReLU6], registered conv first as in the authors' ``MBInvertedConvLayer``."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, groups: int, act: bool, eps: float, momentum: float
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = bn2d(cout, eps, momentum)
        if act:
            self.act = nn.ReLU6(inplace=True)


class MBInvertedConv(nn.Module):
    """Inverted residual body: 1x1 expand (absent when expand == 1), kxk depthwise, 1x1 linear project."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, expand: int, eps: float = 1e-3, momentum: float = 0.1
    ) -> None:
        super().__init__()
        mid = round(cin * expand)
        self.inverted_bottleneck = ConvBN(cin, mid, 1, 1, 1, True, eps, momentum) if expand != 1 else None
        self.depth_conv = ConvBN(mid, mid, kernel, stride, mid, True, eps, momentum)
        self.point_linear = ConvBN(mid, cout, 1, 1, 1, False, eps, momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


class ZeroLayer(nn.Module):
    """The zero op: as a block's body it means 'skip this layer' (the block returns its input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class MobileInvertedResidualBlock(nn.Module):
    """Body plus optional identity shortcut; a zero body returns the input unchanged."""

    def __init__(self, body: nn.Module, residual: bool) -> None:
        super().__init__()
        self.mobile_inverted_conv = body
        self.shortcut = nn.Identity() if residual else None
        self.is_zero = isinstance(body, ZeroLayer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_zero:
            return x
        out = self.mobile_inverted_conv(x)
        return out + x if self.shortcut is not None else out


class LinearClassifier(nn.Module):
    """Dropout (training only) then the linear layer, named ``classifier.linear`` as the authors do."""

    def __init__(self, cin: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout is not None:
            x = self.dropout(x)
        return self.linear(x)
