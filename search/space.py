"""Search spaces: a backbone of stage widths/depths/strides plus the candidate ops of each layer.

A space enumerates its searchable layers (``layers()``); each layer has candidates (MBConv k x e, plus the
zero op where an identity shortcut exists). ``arch(choices)`` turns one candidate per layer into an ArchSpec.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from zoo.arch import ArchError, ArchSpec, BlockSpec


@dataclass(frozen=True)
class Layer:
    """One searchable position: its input shape, output channels, stride and whether it may be skipped."""

    index: int
    in_channels: int
    out_channels: int
    stride: int
    input_size: int
    residual: bool

    @property
    def output_size(self) -> int:
        return -(-self.input_size // self.stride)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    strides: tuple[int, ...]
    stem_channels: int
    stem_stride: int
    first_block: str
    feature_mix: int
    in_chans: int
    input_size: int
    num_classes: int
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (3, 6)
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1

    @property
    def first(self) -> BlockSpec:
        return BlockSpec.parse(self.first_block)

    @property
    def stem_size(self) -> int:
        return -(-self.input_size // self.stem_stride)

    def layers(self) -> list[Layer]:
        out, cin, size = [], self.first.out_channels, self.stem_size
        for width, depth, stride in zip(self.widths, self.depths, self.strides, strict=True):
            for i in range(depth):
                s = stride if i == 0 else 1
                residual = s == 1 and cin == width
                out.append(Layer(len(out), cin, width, s, size, residual))
                cin, size = width, -(-size // s)
        return out

    def candidates(self, layer: Layer) -> list[BlockSpec]:
        """MBConv k x e candidates (kernel-major, as the paper lists them), then ``zero`` where skippable."""
        ops = [
            BlockSpec(e, k, layer.stride, layer.out_channels, layer.residual)
            for e in self.expands
            for k in self.kernels
        ]
        ops.sort(key=lambda b: (b.kernel, b.expand))
        return [*ops, BlockSpec(zero=True, residual=True)] if layer.residual else ops

    def arch(self, choices: list[BlockSpec] | list[str], name: str = "searched") -> ArchSpec:
        layers = self.layers()
        if len(choices) != len(layers):
            raise ArchError(f"space {self.name} has {len(layers)} layers, got {len(choices)} choices")
        blocks = [self.first]
        for layer, choice in zip(layers, choices, strict=True):
            b = BlockSpec.parse(choice) if isinstance(choice, str) else choice
            if b not in self.candidates(layer):
                raise ArchError(f"{b} is not a candidate of layer {layer.index} in space {self.name}")
            blocks.append(b)
        return self.spec(blocks, name)

    def spec(self, blocks: list[BlockSpec], name: str) -> ArchSpec:
        """The arch of this space's stem and head around ``blocks`` (the fixed first block included)."""
        return ArchSpec(
            name=name,
            blocks=tuple(blocks),
            stem_channels=self.stem_channels,
            stem_stride=self.stem_stride,
            feature_mix=self.feature_mix,
            in_chans=self.in_chans,
            input_size=self.input_size,
            num_classes=self.num_classes,
            bn_eps=self.bn_eps,
            bn_momentum=self.bn_momentum,
        )

    def choices_of(self, arch: ArchSpec) -> list[BlockSpec]:
        """Inverse of ``arch``: the per-layer choices of an arch of this space (refuses other archs)."""
        blocks = list(arch.blocks)
        if len(blocks) != len(self.layers()) + 1 or blocks[0] != self.first or arch.input_size != self.input_size:
            raise ArchError(f"arch {arch.name} is not from search space {self.name}")
        self.arch(blocks[1:], arch.name)  # validates every choice
        return blocks[1:]

    def sample(self, rng: random.Random, name: str = "sampled") -> ArchSpec:
        return self.arch([rng.choice(self.candidates(layer)) for layer in self.layers()], name)

    def uniform(self, expand: int, kernel: int, name: str) -> ArchSpec:
        """Every layer the same MBConv (e.g. MobileNetV2-style k3 e6), no layer skipped."""
        return self.arch(
            [BlockSpec(expand, kernel, ly.stride, ly.out_channels, ly.residual) for ly in self.layers()], name
        )


SPACES: dict[str, SearchSpace] = {
    # The paper's ImageNet space (MobileNetV2 backbone).
    "imagenet": SearchSpace(
        name="imagenet",
        widths=(24, 40, 80, 96, 192, 320),
        depths=(4, 4, 4, 4, 4, 1),
        strides=(2, 2, 2, 1, 2, 1),
        stem_channels=32,
        stem_stride=2,
        first_block="mb1_k3_s1_c16",
        feature_mix=1280,
        in_chans=3,
        input_size=224,
        num_classes=1000,
    ),
    # Fashion-MNIST, 28x28 grayscale: stride-1 stem, two downsamplings (28 -> 14 -> 7); an all-k3-e6 net is
    # about 30M MACs, so one trains in minutes on a GPU and a few per epoch on 2 CPU cores.
    "fmnist": SearchSpace(
        name="fmnist",
        widths=(24, 40, 80, 96),
        depths=(2, 3, 3, 2),
        strides=(2, 2, 1, 1),
        stem_channels=24,
        stem_stride=1,
        first_block="mb1_k3_s1_c16",
        feature_mix=640,
        in_chans=1,
        input_size=28,
        num_classes=10,
    ),
}


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise ArchError(f"unknown search space {name!r}; known: {', '.join(SPACES)}") from None
