"""What to export: a zoo model name, an arch JSON file (random weights) or a weights directory.

Each resolves to the eval-mode network plus the facts the exporters need: input shape, normalization and the
dataset it was trained on (which decides the real images used for parity checks and int8 calibration). It is
named after the network (its arch name), not after the file or folder it came from.
Random weights are drawn from a fixed seed, so a later ``proxyless export check`` rebuilds the same network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.files import ExportError
from zoo.datasets import dataset_for_shape, get_dataset
from zoo.samples import Preprocessing

RANDOM_SEED = 0


@dataclass
class Source:
    """An eval-mode network on the CPU and what is known about its inputs."""

    text: str
    name: str
    model: nn.Module
    input_shape: tuple[int, int, int]
    dataset: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str

    @property
    def preprocessing(self) -> Preprocessing:
        classes = getattr(getattr(self.model, "info", None), "categories", None)
        return Preprocessing(self.dataset, self.input_shape, self.mean, self.std, classes)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.text,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "dataset": self.dataset,
            "mean": list(self.mean),
            "std": list(self.std),
            "weights": self.weights,
        }


def _normalization(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    spec = get_dataset(dataset)
    return spec.mean, spec.std


def _random_network(spec: Any) -> nn.Module:
    from zoo.registry import build_network

    torch.manual_seed(RANDOM_SEED)
    return build_network(spec)


def _from_info(text: str, model: nn.Module, info: Any, weights: str) -> Source:
    shape = tuple(int(v) for v in info.input_size)
    return Source(text, info.name, model.eval(), shape, info.dataset, tuple(info.mean), tuple(info.std), weights)


def _from_arch_file(path: Path) -> Source:
    from zoo.registry import spec_from_dict

    try:
        spec = spec_from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not a JSON arch file ({e})") from None
    shape = (int(spec.in_chans), int(spec.input_size), int(spec.input_size))
    dataset = dataset_for_shape(shape)
    mean, std = _normalization(dataset)
    model = _random_network(spec).eval()
    return Source(str(path.resolve()), spec.name, model, shape, dataset, mean, std, f"random (seed {RANDOM_SEED})")


def _from_weights_dir(path: Path) -> Source:
    from zoo.registry import build_network, weights_dir_info
    from zoo.weights import load_pretrained

    info = weights_dir_info(path)
    model = build_network(info.arch)
    load_pretrained(model, path)
    model.info = info
    source = _from_info(str(path.resolve()), model, info, f"{path} (sha256 {info.weights.sha256[:12]})")
    source.name = getattr(info.arch, "name", info.name)  # the net, not its folder ("train", "best", ...)
    return source


def _from_name(name: str, random_weights: bool) -> Source:
    from zoo.registry import create_model, get_model_info

    info = get_model_info(name)
    if random_weights or info.weights is None:
        torch.manual_seed(RANDOM_SEED)
        model = create_model(name, pretrained=False)
        why = "asked for" if random_weights else "no weights registered for this model here"
        return _from_info(name, model, model.info, f"random (seed {RANDOM_SEED}; {why})")
    model = create_model(name, pretrained=True)
    return _from_info(name, model, model.info, f"{info.weights.source} (sha256 {info.weights.sha256[:12]})")


def source_from_model(model: nn.Module, input_shape: tuple[int, int, int]) -> Source:
    """A Source for a network handed over in code: its registry ``info`` where it has one, else guesses."""
    info = getattr(model, "info", None)
    if info is not None:
        return _from_info("<model>", model, info, "as given")
    dataset = dataset_for_shape(input_shape)
    mean, std = _normalization(dataset)
    return Source("<model>", type(model).__name__, model.eval(), input_shape, dataset, mean, std, "as given")


def load_source(text: str, random_weights: bool = False) -> Source:
    """Resolve ``text``: an existing directory is a weights directory, an existing ``.json`` file an arch spec,
    anything else a registered zoo name (its weights where they exist here, else random ones, said so)."""
    path = Path(text).expanduser()
    if path.is_dir():
        if random_weights:
            raise ExportError(f"{text}: --random-weights applies to a model name, not a weights directory")
        return _from_weights_dir(path)
    if path.suffix == ".json":
        if not path.is_file():
            raise ExportError(f"{text}: arch file not found")
        return _from_arch_file(path)
    return _from_name(text, random_weights)
