"""Size limits an arch spec is checked against before any network is built from it.

A ``config.json`` from a weights folder, a ``PROXYLESS_ZOO_EXTRA`` entry or a Hub repo is untrusted input: absurd
widths, depths or resolution would make ``create_model`` (or an export, or the demo) try to allocate gigabytes
to terabytes and die with a traceback. ``check_arch_size`` measures the spec first, without memory: the block
count and input size, MACs and feature-map sizes from the spec's numbers, parameters (when the MACs leave room
for too many) from a build on the ``meta`` device (shapes only). Each limit is an option for users with big nets:
``PROXYLESS_ZOO_MAX_<FIELD>`` (e.g. ``PROXYLESS_ZOO_MAX_PARAMS=5e9``) raises it.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from zoo.arch import ArchError

ENV_PREFIX = "PROXYLESS_ZOO_MAX_"
BYTES_PER_VALUE = 4  # float32


class ArchSizeError(ArchError):
    """An arch spec over a size limit; one line naming the quantity, its value, the limit and how to raise it."""


@dataclass(frozen=True)
class SizeLimits:
    """The largest network a spec may describe; the defaults are far above any published ProxylessNAS net (at most
    7M params, 0.6G MACs) and far below what would exhaust a machine's memory."""

    blocks: int = 1_000
    input_size: int = 4_096
    params: int = 1_000_000_000  # 4 GB of float32 weights
    macs: int = 1_000_000_000_000  # per image
    activation_mb: int = 8_192  # feature maps of one image, float32 (mbconv_activations, tree_activations)

    @classmethod
    def from_env(cls) -> SizeLimits:
        """The defaults, each replaced by ``PROXYLESS_ZOO_MAX_<FIELD>`` where that is set (read per call)."""
        values: dict[str, int] = {}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            text = os.environ.get(name, "").strip()
            if not text:
                continue
            try:
                values[f.name] = int(float(text))
            except (ValueError, OverflowError):
                raise ArchSizeError(f"{name}={text!r}: expected a number") from None
        return cls(**values)


def _over(spec: Any, what: str, field: str, value: int, limit: int) -> ArchSizeError:
    return ArchSizeError(
        f"{spec.name}: {what} {value:,} is over the limit {limit:,} (set {ENV_PREFIX}{field.upper()} to allow a "
        "bigger net)"
    )


def _out(size: int, stride: int) -> int:
    return -(-size // stride)


def mbconv_activations(spec: Any) -> int:
    """Values of the feature maps one image makes in an MBConv net (``proxyless-arch/1``): the input and every
    convolution's output (expand, depthwise, project, feature mix), from the spec alone."""
    size = _out(spec.input_size, spec.stem_stride)
    total = spec.in_chans * spec.input_size**2 + spec.stem_channels * size * size
    cin = spec.stem_channels
    for b in spec.blocks:
        if b.zero:
            continue
        mid, out = cin * b.expand, _out(size, b.stride)
        total += (mid * size * size if b.expand != 1 else 0) + mid * out * out + b.out_channels * out * out
        cin, size = b.out_channels, out
    return total + (spec.feature_mix or 0) * size * size + spec.head_channels + spec.num_classes


def tree_activations(spec: Any) -> int:
    """Values of the feature maps one image makes in a tree net (``proxyless-tree-arch/1``): the input and every
    block's output, from the spec's own shape trace."""
    shape = (spec.in_chans, spec.input_size, spec.input_size)
    total = math.prod(shape)
    for i, block in enumerate(spec.blocks):
        shape, _ = block.trace(shape, f"{spec.name}: blocks.{i}")
        total += math.prod(shape)
    return total


@functools.lru_cache(maxsize=64)
def _params(spec: Any, build: Callable[[Any], nn.Module]) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return sum(p.numel() for p in build(spec).parameters())


def check_arch_size(
    spec: Any,
    build: Callable[[Any], nn.Module],
    count_macs: Callable[[Any], int],
    count_activations: Callable[[Any], int],
    limits: SizeLimits | None = None,
) -> None:
    """Raise ``ArchSizeError`` if ``spec`` exceeds ``limits`` (default: ``SizeLimits.from_env()``). All from the
    spec's numbers, except parameters over the MACs: a convolution or linear layer runs each weight at least once
    per image, so only a net with more MACs than the parameter limit is built (on the meta device) to count them."""
    limits = limits or SizeLimits.from_env()
    if len(spec.blocks) > limits.blocks:
        raise _over(spec, "blocks: the block count", "blocks", len(spec.blocks), limits.blocks)
    if spec.input_size > limits.input_size:
        raise _over(spec, "input_size", "input_size", spec.input_size, limits.input_size)
    macs = count_macs(spec)
    if macs > limits.macs:
        raise _over(spec, f"MACs at input_size {spec.input_size}", "macs", macs, limits.macs)
    mb = count_activations(spec) * BYTES_PER_VALUE // 2**20
    if mb > limits.activation_mb:
        what = f"activation memory (MB, feature maps of one image) at input_size {spec.input_size}"
        raise _over(spec, what, "activation_mb", mb, limits.activation_mb)
    if macs > limits.params:
        params = _params(spec, build)
        if params > limits.params:
            raise _over(spec, "params", "params", params, limits.params)
