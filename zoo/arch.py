"""Arch spec: the one JSON description every zoo network is built from.

A spec names the stem, a list of blocks in a compact string notation and the head. Block strings
(read like timm's block strings, but our own):

- ``mb{e}_k{k}_s{s}_c{c}``      MBConv, expand ratio e, kernel k, stride s, c output channels
- ``mb{e}_k{k}_s{s}_c{c}_res``  the same with an identity shortcut (stride 1, in == out channels)
- ``zero``                      a skipped layer (the ProxylessNAS zero op): returns its input

``to_json`` / ``from_json`` round-trip exactly.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

FORMAT = "proxyless-arch/1"
_BLOCK_RE = re.compile(r"^mb(?P<e>\d+)_k(?P<k>\d+)_s(?P<s>\d+)_c(?P<c>\d+)(?P<res>_res)?$")
# a network's name becomes file names (artefacts, weights dirs): no separators, no leading dot
NAME_RE = re.compile(r"^[A-Za-z0-9][\w.-]*$")


class ArchError(ValueError):
    """An arch spec or block string that cannot describe a network."""


def check_fields(spec: Any, ints: dict[str, int]) -> None:
    """The checks both spec families share: a name that is safe as a file name, integer fields at their minimum
    (``ints``: field -> minimum), BN/dropout values in range. One-line ArchErrors, not tracebacks later."""
    if not isinstance(spec.name, str) or not NAME_RE.match(spec.name):
        raise ArchError(f"bad arch name {spec.name!r}: letters, digits, '_', '-', '.' (it names files)")
    for name, low in ints.items():
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ArchError(f"{spec.name}: {name} must be an integer >= {low}, got {value!r}")
    numbers = {"bn_eps": (0, None), "bn_momentum": (0, 1), "dropout": (0, 1)}
    for name, (low, high) in numbers.items():
        value = getattr(spec, name)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= low
        if not ok or (high is not None and value > high) or (name == "bn_eps" and value == 0):
            raise ArchError(f"{spec.name}: {name} must be a number in its range, got {value!r}")


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block, or the zero op when ``zero`` is True."""

    expand: int = 1
    kernel: int = 3
    stride: int = 1
    out_channels: int = 0
    residual: bool = False
    zero: bool = False

    @classmethod
    def parse(cls, text: str) -> BlockSpec:
        if text == "zero":
            return cls(zero=True, residual=True)
        m = _BLOCK_RE.match(text)
        if not m:
            raise ArchError(f"bad block string {text!r}: expected 'mb<e>_k<k>_s<s>_c<c>[_res]' or 'zero'")
        block = cls(int(m["e"]), int(m["k"]), int(m["s"]), int(m["c"]), bool(m["res"]))
        if block.kernel % 2 == 0 or block.expand < 1 or block.stride < 1 or block.out_channels < 1:
            raise ArchError(f"bad block string {text!r}: kernel must be odd, expand/stride/channels >= 1")
        return block

    def __str__(self) -> str:
        if self.zero:
            return "zero"
        s = f"mb{self.expand}_k{self.kernel}_s{self.stride}_c{self.out_channels}"
        return s + "_res" if self.residual else s


@dataclass(frozen=True)
class ArchSpec:
    """A whole MBConv network: stem -> blocks -> feature mix -> pool -> classifier."""

    name: str
    blocks: tuple[BlockSpec, ...]
    stem_channels: int = 32
    stem_kernel: int = 3
    stem_stride: int = 2
    feature_mix: int | None = 1280
    in_chans: int = 3
    input_size: int = 224
    num_classes: int = 1000
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1
    dropout: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        ints = {"stem_channels": 1, "stem_kernel": 1, "stem_stride": 1, "in_chans": 1, "input_size": 1}
        check_fields(self, {**ints, "num_classes": 1, **({} if self.feature_mix is None else {"feature_mix": 1})})
        if self.stem_kernel % 2 == 0:
            raise ArchError(f"{self.name}: stem_kernel must be odd, got {self.stem_kernel}")
        if not all(isinstance(b, BlockSpec) for b in self.blocks):
            raise ArchError(f"{self.name}: blocks must be BlockSpecs (parse block strings with BlockSpec.parse)")
        channels, size = self.stem_channels, -(-self.input_size // self.stem_stride)
        for i, b in enumerate(self.blocks):
            if b.zero:
                continue
            if b.residual and (b.stride != 1 or b.out_channels != channels):
                raise ArchError(
                    f"{self.name}: block {i} ({b}) has an identity shortcut but changes shape "
                    f"({channels} -> {b.out_channels} channels, stride {b.stride})"
                )
            channels, size = b.out_channels, -(-size // b.stride)
        if size < 1:
            raise ArchError(f"{self.name}: input {self.input_size} is too small for the strides")

    @property
    def last_channels(self) -> int:
        out = [b.out_channels for b in self.blocks if not b.zero]
        return out[-1] if out else self.stem_channels

    @property
    def head_channels(self) -> int:
        return self.feature_mix or self.last_channels

    def with_classes(self, num_classes: int) -> ArchSpec:
        return replace(self, num_classes=num_classes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = [str(b) for b in self.blocks]
        if not d["extra"]:
            del d["extra"]
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ArchError(f"not a {FORMAT} arch spec (format={d.get('format') if isinstance(d, dict) else d!r})")
        d = {k: v for k, v in d.items() if k != "format"}
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ArchError(f"arch spec has unknown keys: {sorted(unknown)}")
        if "name" not in d or not isinstance(d.get("blocks"), list):
            raise ArchError("arch spec needs a 'name' and a list of 'blocks'")
        if not all(isinstance(b, str) for b in d["blocks"]):
            raise ArchError(f"{d['name']!r}: every block must be a block string like 'mb6_k3_s1_c32'")
        d["blocks"] = tuple(BlockSpec.parse(b) for b in d["blocks"])
        if not isinstance(d.get("extra", {}), dict):
            raise ArchError(f"{d['name']!r}: 'extra' must be an object")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        return cls.from_dict(json.loads(text))
