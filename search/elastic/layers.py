"""Elastic MBConv: one set of weights at the widest expansion and largest kernel serves every (kernel, expand).

A smaller kernel is the centre crop of the largest depthwise kernel; a smaller expand ratio keeps the first
``round(cin * e)`` middle channels of the expand conv, the depthwise conv, both their BNs and the projection's
input. Module names follow the zoo's ``MBInvertedConv`` (``inverted_bottleneck.conv``, ``depth_conv.bn``, ...),
so extracting a subnet is slicing each tensor of the same name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ConvBN(nn.Module):
    """Holds a conv and its BN at full size; ``ElasticMBConv`` runs them sliced."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv, self.bn = conv, bn


def sliced_bn(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> torch.Tensor:
    """BN over the first ``channels`` of ``bn``; in training the running stats of that slice are updated in place."""
    mean, var = bn.running_mean[:channels], bn.running_var[:channels]
    return F.batch_norm(x, mean, var, bn.weight[:channels], bn.bias[:channels], bn.training, bn.momentum, bn.eps)


class ElasticMBConv(nn.Module):
    """1x1 expand -> kxk depthwise -> 1x1 linear projection, run at any ``kernel`` and ``expand`` it was built for."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        kernels: tuple[int, ...],
        expands: tuple[int, ...],
        eps: float,
        momentum: float,
    ) -> None:
        super().__init__()
        self.cin, self.stride, self.kmax = cin, stride, max(kernels)
        mid = self.mid(max(expands))
        bn = lambda c: nn.BatchNorm2d(c, eps=eps, momentum=momentum)  # noqa: E731
        self.inverted_bottleneck = _ConvBN(nn.Conv2d(cin, mid, 1, bias=False), bn(mid))
        depth = nn.Conv2d(mid, mid, self.kmax, stride, self.kmax // 2, groups=mid, bias=False)
        self.depth_conv = _ConvBN(depth, bn(mid))
        self.point_linear = _ConvBN(nn.Conv2d(mid, cout, 1, bias=False), bn(cout))

    def mid(self, expand: int) -> int:
        return round(self.cin * expand)

    def depth_weight(self, kernel: int, mid: int) -> torch.Tensor:
        """The centre ``kernel x kernel`` crop of the first ``mid`` depthwise filters."""
        off = (self.kmax - kernel) // 2
        return self.depth_conv.conv.weight[:mid, :, off : off + kernel, off : off + kernel]

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        mid = self.mid(expand)
        ib, dc, pl = self.inverted_bottleneck, self.depth_conv, self.point_linear
        x = F.relu6(sliced_bn(F.conv2d(x, ib.conv.weight[:mid]), ib.bn, mid))
        x = F.conv2d(x, self.depth_weight(kernel, mid), None, self.stride, kernel // 2, 1, mid)
        x = F.relu6(sliced_bn(x, dc.bn, mid))
        return sliced_bn(F.conv2d(x, pl.conv.weight[:, :mid]), pl.bn, pl.bn.num_features)

    @torch.no_grad()
    def sliced_state(self, kernel: int, expand: int) -> dict[str, torch.Tensor]:
        """This op's tensors at ``kernel`` / ``expand``, named as in the zoo's ``MBInvertedConv``."""
        mid = self.mid(expand)
        out: dict[str, torch.Tensor] = {
            "inverted_bottleneck.conv.weight": self.inverted_bottleneck.conv.weight[:mid],
            "depth_conv.conv.weight": self.depth_weight(kernel, mid),
            "point_linear.conv.weight": self.point_linear.conv.weight[:, :mid],
        }
        for name, part, channels in (
            ("inverted_bottleneck", self.inverted_bottleneck, mid),
            ("depth_conv", self.depth_conv, mid),
            ("point_linear", self.point_linear, self.point_linear.bn.num_features),
        ):
            for key, value in part.bn.state_dict().items():
                out[f"{name}.bn.{key}"] = value if value.ndim == 0 else value[:channels]
        return {k: v.clone() for k, v in out.items()}
