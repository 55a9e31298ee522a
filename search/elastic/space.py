"""Elastic spaces: a backbone's stages with elastic depth, and per layer an elastic kernel and expand ratio.

A subnet is one depth per stage (it runs the first ``d`` layers of the stage, as Once-for-All does) and one
kernel and expand ratio per layer. Genes of layers beyond a stage's depth do not matter; ``Subnet`` keeps them
normalized (the smallest choice) so that equal networks compare and hash equal. ``arch()`` writes a subnet as a
plain zoo ``ArchSpec`` (skipped layers left out), so latency tables, the zoo, export and the demo take it as is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from search.space import SPACES, Layer, SearchSpace
from zoo.arch import ArchError, ArchSpec, BlockSpec


@dataclass(frozen=True)
class Subnet:
    """One depth per stage, one kernel and expand per layer of the widest backbone (normalized where inactive)."""

    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[int, ...]

    def __str__(self) -> str:
        text = lambda genes: "".join(map(str, genes))  # noqa: E731
        return f"d{text(self.depths)}-k{text(self.kernels)}-e{text(self.expands)}"


@dataclass(frozen=True)
class ElasticSpace:
    """``backbone`` gives stage widths, strides and the *largest* depths; the rest are the elastic choices.

    The backbone is a ``SearchSpace`` with the same ops, so its latency tables price every subnet.
    """

    name: str
    backbone: SearchSpace
    min_depths: tuple[int, ...]
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (3, 6)
    baseline_op: tuple[int, int] = (3, 6)  # (kernel, expand) of the hand-designed net: MobileNetV2's k3 e6

    def __post_init__(self) -> None:
        b = self.backbone
        pairs = zip(self.min_depths, b.depths, strict=False)
        if len(self.min_depths) != len(b.depths) or any(not 1 <= m <= d for m, d in pairs):
            raise ArchError(f"elastic space {self.name}: min depths {self.min_depths} must be 1..{b.depths}")

    # ---------------------------------------------------------------- structure

    def layers(self) -> list[Layer]:
        return self.backbone.layers()

    @property
    def max_depths(self) -> tuple[int, ...]:
        return self.backbone.depths

    def stage_start(self, stage: int) -> int:
        return sum(self.max_depths[:stage])

    def stage_of(self, layer: int) -> int:
        for stage in range(len(self.max_depths)):
            if layer < self.stage_start(stage + 1):
                return stage
        raise IndexError(layer)

    def active(self, subnet: Subnet) -> list[int]:
        """Indices of the layers a subnet runs, in order."""
        return [self.stage_start(s) + i for s, d in enumerate(subnet.depths) for i in range(d)]

    # ---------------------------------------------------------------- subnets

    def subnet(self, depths: tuple[int, ...], kernels: tuple[int, ...], expands: tuple[int, ...]) -> Subnet:
        """A checked, normalized subnet."""
        n = len(self.layers())
        if len(depths) != len(self.max_depths) or any(
            not lo <= d <= hi for d, lo, hi in zip(depths, self.min_depths, self.max_depths, strict=False)
        ):
            raise ArchError(f"depths {depths} outside {self.min_depths}..{self.max_depths} of space {self.name}")
        if len(kernels) != n or len(expands) != n:
            raise ArchError(f"space {self.name} has {n} layers: need {n} kernels and {n} expands")
        if any(k not in self.kernels for k in kernels) or any(e not in self.expands for e in expands):
            raise ArchError(f"kernels must be in {self.kernels} and expands in {self.expands} (space {self.name})")
        on = set(self.active(Subnet(tuple(depths), (), ())))
        k = tuple(k if i in on else self.kernels[0] for i, k in enumerate(kernels))
        e = tuple(e if i in on else self.expands[0] for i, e in enumerate(expands))
        return Subnet(tuple(depths), k, e)

    def uniform(self, kernel: int, expand: int, depths: tuple[int, ...] | None = None) -> Subnet:
        n = len(self.layers())
        return self.subnet(depths or self.max_depths, (kernel,) * n, (expand,) * n)

    def largest(self) -> Subnet:
        return self.uniform(max(self.kernels), max(self.expands))

    def smallest(self) -> Subnet:
        return self.uniform(min(self.kernels), min(self.expands), self.min_depths)

    def baseline(self) -> Subnet:
        """The hand-designed net inside the space: every layer the baseline op, every stage at full depth."""
        return self.uniform(*self.baseline_op)

    def sample(self, rng: random.Random) -> Subnet:
        n = len(self.layers())
        depths = tuple(rng.randint(lo, hi) for lo, hi in zip(self.min_depths, self.max_depths, strict=True))
        kernels = tuple(rng.choice(self.kernels) for _ in range(n))
        expands = tuple(rng.choice(self.expands) for _ in range(n))
        return self.subnet(depths, kernels, expands)

    # ---------------------------------------------------------------- as zoo archs

    def arch(self, subnet: Subnet, name: str = "subnet") -> ArchSpec:
        """The subnet as a plain network: the fixed first block, then the active layers only."""
        b, layers = self.backbone, self.layers()
        blocks = [b.first]
        for i in self.active(subnet):
            ly = layers[i]
            blocks.append(BlockSpec(subnet.expands[i], subnet.kernels[i], ly.stride, ly.out_channels, ly.residual))
        return b.spec(blocks, name)

    def subnet_of(self, arch: ArchSpec) -> Subnet:
        """Inverse of ``arch``: the subnet a plain network of this space is (skipped ``zero`` blocks allowed)."""
        b, layers = self.backbone, self.layers()
        blocks = [x for x in arch.blocks if not x.zero]
        head = (arch.stem_channels, arch.stem_stride, arch.feature_mix, arch.in_chans, arch.input_size)
        if (
            not blocks
            or blocks[0] != b.first
            or head != (b.stem_channels, b.stem_stride, b.feature_mix, b.in_chans, b.input_size)
        ):
            raise ArchError(f"arch {arch.name} does not have the stem and head of elastic space {self.name}")
        n = len(layers)
        kernels, expands = [min(self.kernels)] * n, [min(self.expands)] * n
        depths = [0] * len(self.max_depths)
        rest = iter(blocks[1:])
        block = next(rest, None)
        for stage, width in enumerate(b.widths):
            for i in range(self.stage_start(stage), self.stage_start(stage + 1)):
                ly = layers[i]
                first = i == self.stage_start(stage)
                if block is None or (not first and block.out_channels != width):
                    break
                if (block.stride, block.out_channels, block.residual) != (ly.stride, width, ly.residual):
                    raise ArchError(f"arch {arch.name}: block {block} does not fit layer {i} of space {self.name}")
                kernels[i], expands[i] = block.kernel, block.expand
                depths[stage] += 1
                block = next(rest, None)
        if block is not None:
            raise ArchError(f"arch {arch.name} has more blocks than elastic space {self.name} can hold")
        return self.subnet(tuple(depths), tuple(kernels), tuple(expands))


ELASTIC_SPACES: dict[str, ElasticSpace] = {
    # Fashion-MNIST: the ``fmnist`` backbone (its latency tables price every op) with each stage 1..its depth.
    # fmnist_mobilenetv2 (k3 e6, full depth) is a subnet. On the shipped CPU table the largest subnet (k7 e6) is
    # 5.3x the smallest (k3 e3, one layer a stage) and they span 0.23x..1.21x of the baseline. Deeper stages
    # (3, 4, 4, 3) made a sandwich training step 1.6x dearer (6.3 s against 4.0 s, batch 256, one thread).
    "fmnist": ElasticSpace("fmnist", SPACES["fmnist"], min_depths=(1, 1, 1, 1)),
    # The ImageNet backbone of the paper with Once-for-All's depths {2, 3, 4} per stage (the last stage fixed).
    "imagenet": ElasticSpace("imagenet", SPACES["imagenet"], min_depths=(2, 2, 2, 2, 2, 1)),
}

# The zoo's trained hand-designed net of a space (its ``baseline()`` subnet trained alone), where one ships:
# specialize compares its net with it and fine-tunes with it as the default teacher. Kept out of ``ElasticSpace``,
# whose fields are the definition a trained supernet is checked against.
BASELINE_MODELS: dict[str, str] = {"fmnist": "fmnist_mobilenetv2"}


def get_elastic_space(name: str) -> ElasticSpace:
    try:
        return ELASTIC_SPACES[name]
    except KeyError:
        raise ArchError(f"unknown elastic space {name!r}; known: {', '.join(ELASTIC_SPACES)}") from None
