"""Size limits an arch spec is checked against before any network is built from it.

A ``config.json`` from a weights folder, a ``PROXYLESS_ZOO_EXTRA`` entry or a Hub repo is untrusted input: absurd
widths, depths or resolution would make ``create_model`` (or an export, or the demo) try to allocate gigabytes
to terabytes and die with a traceback. ``check_arch_size`` measures the spec first, without memory: the block
count and input size from the spec, MACs from the family's counter, parameters and activations from a build
and a forward pass on the ``meta`` device (shapes only). Each limit is an option for users with big nets:
``PROXYLESS_ZOO_MAX_<FIELD>`` (e.g. ``PROXYLESS_ZOO_MAX_PARAMS=5e9``) raises it.
"""

from __future__ import annotations

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
    """The largest network a spec may describe; defaults are ~100x the largest published ProxylessNAS net."""

    blocks: int = 1_000
    input_size: int = 4_096
    params: int = 1_000_000_000  # 4 GB of float32 weights
    macs: int = 1_000_000_000_000  # per image
    activation_mb: int = 8_192  # every layer's output for one image, float32 (what training keeps)

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
            except ValueError:
                raise ArchSizeError(f"{name}={text!r}: expected a number") from None
        return cls(**values)


def _over(spec: Any, what: str, field: str, value: int, limit: int) -> ArchSizeError:
    return ArchSizeError(
        f"{spec.name}: {what} {value:,} is over the limit {limit:,} (set {ENV_PREFIX}{field.upper()} to allow a "
        "bigger net)"
    )


def activation_values(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Values output by every leaf module for one input, counted by a forward pass on the meta device."""
    total = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model.eval()(torch.empty((1, *input_shape), device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return total


def check_arch_size(
    spec: Any,
    build: Callable[[Any], nn.Module],
    count_macs: Callable[[Any], int],
    limits: SizeLimits | None = None,
) -> None:
    """Raise ``ArchSizeError`` if ``spec`` exceeds ``limits`` (default: ``SizeLimits.from_env()``); cheap checks
    first, so an absurd spec is refused before it is even built on the meta device."""
    limits = limits or SizeLimits.from_env()
    if len(spec.blocks) > limits.blocks:
        raise _over(spec, "blocks: the block count", "blocks", len(spec.blocks), limits.blocks)
    if spec.input_size > limits.input_size:
        raise _over(spec, "input_size", "input_size", spec.input_size, limits.input_size)
    macs = count_macs(spec)
    if macs > limits.macs:
        raise _over(spec, f"MACs at input_size {spec.input_size}", "macs", macs, limits.macs)
    with torch.device("meta"):
        model = build(spec)
    params = sum(p.numel() for p in model.parameters())
    if params > limits.params:
        raise _over(spec, "params", "params", params, limits.params)
    mb = activation_values(model, (spec.in_chans, spec.input_size, spec.input_size)) * BYTES_PER_VALUE // 2**20
    if mb > limits.activation_mb:
        raise _over(
            spec, f"activation memory (MB) at input_size {spec.input_size}", "activation_mb", mb, limits.activation_mb
        )
