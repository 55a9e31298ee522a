"""Import the authors' ``net.config`` JSON (ProxylessNASNets) into our arch spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoo.arch import ArchError, ArchSpec, BlockSpec


def _block(b: dict[str, Any]) -> BlockSpec:
    conv = b["mobile_inverted_conv"]
    if conv["name"] == "ZeroLayer":
        return BlockSpec(zero=True, residual=True)
    if conv["name"] != "MBInvertedConvLayer":
        raise ArchError(f"unsupported block body {conv['name']!r} in authors' config")
    return BlockSpec(
        expand=int(conv["expand_ratio"]),
        kernel=int(conv["kernel_size"]),
        stride=int(conv["stride"]),
        out_channels=int(conv["out_channels"]),
        residual=b.get("shortcut") is not None,
    )


def arch_from_authors_config(config: dict[str, Any], name: str, input_size: int = 224) -> ArchSpec:
    """Translate a ``ProxylessNASNets`` config; the PyramidTreeNet (CIFAR) has its own importer."""
    if config.get("name") != "ProxylessNASNets":
        raise ArchError(f"expected a ProxylessNASNets config, got {config.get('name')!r}")
    first, mix, cls = config["first_conv"], config.get("feature_mix_layer"), config["classifier"]
    bn = config.get("bn") or {"eps": 1e-5, "momentum": 0.1}
    return ArchSpec(
        name=name,
        blocks=tuple(_block(b) for b in config["blocks"]),
        stem_channels=int(first["out_channels"]),
        stem_kernel=int(first["kernel_size"]),
        stem_stride=int(first["stride"]),
        feature_mix=int(mix["out_channels"]) if mix else None,
        in_chans=int(first["in_channels"]),
        input_size=input_size,
        num_classes=int(cls["out_features"]),
        bn_eps=float(bn["eps"]),
        bn_momentum=float(bn["momentum"]),
        dropout=float(cls.get("dropout_rate", 0.0)),
    )


def load_authors_config(path: str | Path, name: str | None = None) -> ArchSpec:
    path = Path(path)
    return arch_from_authors_config(json.loads(path.read_text()), name or path.stem)
