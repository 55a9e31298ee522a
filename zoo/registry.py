"""The model registry: every zoo network by name, with its metadata, and ``create_model``.

Three sources, later ones winning on a name clash: the published networks (arch JSON in ``zoo/archs``),
bundled weights directories ``zoo/pretrained/<name>/`` (``config.json`` + ``model.safetensors``, read at
import), and the directories listed in ``PROXYLESS_ZOO_EXTRA`` (os.pathsep-separated, read whenever the
registry is consulted, so it may be set after import). ``register_model`` adds one in code.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.arch import NAME_RE
from zoo.datasets import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from zoo.limits import SizeLimits, check_arch_size, mbconv_activations, tree_activations
from zoo.weights import (
    CONFIG_FILE,
    HUB_PREFIX,
    WEIGHTS_FILE,
    LoadedWeights,
    WeightsError,
    WeightsRef,
    hub_config,
    load_pretrained,
    parse_hub_source,
    read_config,
    regular_file,
)

__all__ = [
    "ModelInfo",
    "WeightsRef",
    "ZooError",
    "build_network",
    "create_model",
    "get_model_info",
    "list_models",
    "register_model",
    "spec_from_dict",
]

HERE = Path(__file__).parent
ARCHS_DIR = HERE / "archs"
PRETRAINED_DIR = HERE / "pretrained"
EXTRA_ENV = "PROXYLESS_ZOO_EXTRA"
AUTHORS = "ProxylessNAS authors (Cai, Zhu, Han, ICLR 2019; github.com/mit-han-lab/proxylessnas)"
PUBLISHED = "paper/authors' logs"
log = logging.getLogger(__name__)


class ZooError(ValueError):
    """An unknown model name or an option the model does not have."""


@dataclass(frozen=True)
class _Family:
    """Where the spec class, network class and MAC counter of one arch JSON ``format`` live (imported lazily), and
    how its feature maps are counted (``zoo.limits``)."""

    module: str
    spec_class: str
    net_class: str
    macs: str
    activations: Callable[[Any], int]

    def attr(self, name: str) -> Any:
        return getattr(importlib.import_module(self.module), name)


_FAMILIES = {
    "proxyless-arch/1": _Family("zoo.network", "ArchSpec", "ProxylessNet", "count_macs", mbconv_activations),
    "proxyless-tree-arch/1": _Family(
        "zoo.pyramid_tree", "TreeArchSpec", "PyramidTreeNet", "count_tree_macs", tree_activations
    ),
}


def _family(fmt: Any) -> _Family:
    try:
        return _FAMILIES[fmt]
    except (KeyError, TypeError):
        raise ZooError(f"unknown arch format {fmt!r}; known: {', '.join(_FAMILIES)}") from None


def spec_from_dict(d: dict[str, Any]) -> Any:
    """An arch spec of whichever family its ``format`` names."""
    fam = _family(d.get("format"))
    return fam.attr(fam.spec_class).from_dict(d)


def _spec_family(spec: Any) -> _Family:
    return _family(spec.to_dict().get("format"))


def check_size(spec: Any, limits: SizeLimits | None = None) -> None:
    """``zoo.limits.check_arch_size`` for a spec of any family: ``ArchSizeError`` before anything is allocated."""
    fam = _spec_family(spec)
    check_arch_size(spec, fam.attr(fam.net_class), fam.attr(fam.macs), fam.activations, limits)


def build_network(spec: Any) -> nn.Module:
    """The randomly initialised network of a spec, once its size is checked against ``zoo.limits``."""
    check_size(spec)
    fam = _spec_family(spec)
    return fam.attr(fam.net_class)(spec)


@dataclass(frozen=True)
class ModelInfo:
    """A registered network and what is known about it, like torchvision's ``Weights.meta``.

    ``metrics``: ``top1`` (fraction), ``latency_ms`` ({"cpu_onnxruntime_b1": .., "mobile_pixel1_pred": ..}),
    ``search`` ({...}) and ``source`` (where the figures come from), each only where known.
    """

    name: str
    arch: Any
    dataset: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    categories: tuple[str, ...]
    source: str
    metrics: dict[str, Any]
    weights: WeightsRef | None = None

    @property
    def num_classes(self) -> int:
        return int(self.arch.num_classes)

    @cached_property
    def params(self) -> int:
        """Trainable parameters, counted on a meta-device build (no memory, no init)."""
        fam = _spec_family(self.arch)
        with torch.device("meta"):
            model = fam.attr(fam.net_class)(self.arch)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    @cached_property
    def macs(self) -> int:
        """Multiply-accumulates of one image at ``input_size``."""
        fam = _spec_family(self.arch)
        return int(fam.attr(fam.macs)(self.arch))


def _input_size(spec: Any) -> tuple[int, int, int]:
    return (int(spec.in_chans), int(spec.input_size), int(spec.input_size))


def info_from_config(name: str, config: dict[str, Any], weights: WeightsRef | None) -> ModelInfo:
    """A ModelInfo from a weights ``config.json`` (see ``zoo.weights.save_pretrained``)."""
    meta = config["metadata"]
    return ModelInfo(
        name=name,
        arch=spec_from_dict(config["arch"]),
        dataset=str(meta["dataset"]),
        input_size=tuple(int(v) for v in meta["input_size"]),
        mean=tuple(float(v) for v in meta["mean"]),
        std=tuple(float(v) for v in meta["std"]),
        categories=tuple(str(c) for c in meta["categories"]),
        source=str(meta["source"]),
        metrics=dict(meta["metrics"]),
        weights=weights,
    )


def _with_metadata(info: ModelInfo, config: dict[str, Any]) -> ModelInfo:
    """``info`` with what the loaded weights' config says about data and figures (the spec stays the built one)."""
    other = info_from_config(info.name, config, info.weights)
    keep = {"name", "arch", "input_size", "weights"}
    return replace(info, **{f.name: getattr(other, f.name) for f in fields(ModelInfo) if f.name not in keep})


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ZooError(f"bad model name {name!r}: letters, digits, '_', '-', '.'")


# --- the registry -------------------------------------------------------------------------------------------

_BASE: dict[str, ModelInfo] = {}
_EXTRA_CACHE: dict[tuple[tuple[str, int], ...], dict[str, ModelInfo]] = {}


def register_model(info: ModelInfo) -> ModelInfo:
    """Add (or replace) a model. Hub weights must pin a commit, so a name always means the same bytes."""
    _check_name(info.name)
    w = info.weights
    if w is not None and w.repo_id is not None and not re.fullmatch(r"[0-9a-f]{40}", w.revision or ""):
        raise ZooError(f"{info.name}: registered Hub weights need a pinned 40-hex commit revision")
    _BASE[info.name] = info
    return info


def weights_dir_info(path: str | Path) -> ModelInfo:
    """The model a weights directory describes, named after the directory."""
    path = Path(path)
    regular_file(path / WEIGHTS_FILE, WEIGHTS_FILE)
    config = read_config(path)
    name = path.resolve().name  # "." names the folder it stands for
    _check_name(name)
    return info_from_config(name, config, WeightsRef(config["weights_sha256"], local_path=str(path)))


def _stamp(directory: Path) -> int:
    """What changes when an extra entry's config.json does (its mtime; -1 when absent)."""
    try:
        return (directory / CONFIG_FILE).stat().st_mtime_ns
    except OSError:
        return -1


def _extra_entry(directory: Path, found: dict[str, ModelInfo]) -> ModelInfo:
    """The model of one ``PROXYLESS_ZOO_EXTRA`` directory, checked (config, name, size) against those before it."""
    if not (directory / CONFIG_FILE).is_file():
        raise WeightsError(f"{directory} holds no {CONFIG_FILE} (expected a weights directory)")
    info = weights_dir_info(directory)
    if info.name in found or info.name in _BASE:  # one name, one model: no silent shadowing
        other = found[info.name].weights.local_path if info.name in found else "a registered model"
        raise WeightsError(f"{directory} and {other} are both named {info.name!r}; rename a folder")
    check_size(info.arch)
    return info


def _extra_models() -> dict[str, ModelInfo]:
    """The models of ``PROXYLESS_ZOO_EXTRA``; a bad entry is skipped with one warning line (once per change), so
    that it cannot break the bundled models, ``torch.hub.list`` or the demo."""
    dirs = [Path(p).expanduser().resolve() for p in os.environ.get(EXTRA_ENV, "").split(os.pathsep) if p.strip()]
    key = tuple((str(d), _stamp(d)) for d in dirs)
    if key not in _EXTRA_CACHE:
        found: dict[str, ModelInfo] = {}
        for d in dirs:
            try:
                info = _extra_entry(d, found)
            except (ValueError, OSError) as e:  # WeightsError, ArchError, ZooError; an unreadable folder
                log.warning("%s: skipped %s: %s", EXTRA_ENV, d, str(e).splitlines()[0] if str(e) else type(e).__name__)
                continue
            found[info.name] = info
        _EXTRA_CACHE.clear()
        _EXTRA_CACHE[key] = found
    return _EXTRA_CACHE[key]


def _all() -> dict[str, ModelInfo]:
    return {**_BASE, **_extra_models()}


def list_models(pretrained_only: bool = False, dataset: str | None = None) -> list[str]:
    """Registered names, sorted; ``pretrained_only`` keeps those whose weights ``pretrained=True`` loads,
    ``dataset`` those trained on it (e.g. ``"fashion-mnist"``)."""
    return sorted(
        n
        for n, info in _all().items()
        if (info.weights is not None or not pretrained_only) and (dataset is None or info.dataset == dataset)
    )


def hub_model_info(source: str) -> ModelInfo:
    """A model published to the Hub, described by its own config.json (``hf-hub:ORG/REPO[@REV]``)."""
    repo_id, revision = parse_hub_source(source)
    config = hub_config(source)
    weights = WeightsRef(config["weights_sha256"], repo_id=repo_id, revision=revision)
    return info_from_config(repo_id.split("/")[-1], config, weights)


def get_model_info(name: str) -> ModelInfo:
    """A registered model, one on the Hub named ``hf-hub:ORG/REPO[@REV]``, or a weights folder's (a path that is
    not a registered name: ``create_model("runs/my_net", pretrained=True)``, e.g. what ``specialize`` wrote)."""
    if name.startswith(HUB_PREFIX):
        return hub_model_info(name)
    models = _all()
    if name in models:
        return models[name]
    if (Path(name) / CONFIG_FILE).is_file():
        return weights_dir_info(name)
    if "/" in name or os.sep in name:
        raise ZooError(f"{name}: not a weights folder (no {CONFIG_FILE} there)")
    raise ZooError(f"unknown model {name!r}; known: {', '.join(sorted(models))}")


def no_weights_message(name: str) -> str:
    return (
        f"{name}: no published weights can be fetched here (the authors' checkpoints are not on any reachable "
        f"host); import the authors' checkpoint with `proxyless zoo import-official --arch {name} CKPT.pth "
        "--out DIR`, then pass pretrained=DIR"
    )


def _ref_for(source: str | Path, loaded: LoadedWeights) -> WeightsRef:
    """Provenance of weights loaded from a user-given source: the Hub repo as asked, else the local path."""
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        repo_id, revision = parse_hub_source(source)
        return WeightsRef(loaded.sha256, repo_id=repo_id, revision=revision)
    return WeightsRef.local(loaded.path.parent if loaded.config else loaded.path, loaded.sha256)


def _override(spec: Any, options: dict[str, Any], name: str) -> Any:
    allowed = set(spec.__dataclass_fields__) - {"name", "num_classes"}
    bad = sorted(set(options) - allowed)
    if bad:
        raise ZooError(f"{name}: unknown option {bad[0]!r}; options: num_classes, {', '.join(sorted(allowed))}")
    return replace(spec, **options)


def create_model(
    name: str, pretrained: bool | str | Path = False, num_classes: int | None = None, **kwargs: Any
) -> nn.Module:
    """Build a registered network; ``pretrained``: False, True (its registered weights), or a weights directory,
    ``.safetensors`` file or ``hf-hub:ORG/REPO[@REV]``. ``num_classes`` swaps in a new (random) classifier when it
    differs from the weights'; other keyword arguments replace arch spec fields (e.g. ``dropout=0.2``)."""
    info = get_model_info(name)
    spec = _override(info.arch, kwargs, name) if kwargs else info.arch
    new_head = num_classes is not None and num_classes != spec.num_classes
    if new_head:
        if num_classes < 1:
            raise ZooError(f"{name}: num_classes must be >= 1, got {num_classes}")
        spec = spec.with_classes(num_classes)
    info = replace(info, arch=spec, input_size=_input_size(spec))
    model = build_network(spec)
    if pretrained is True:
        if info.weights is None:
            raise WeightsError(no_weights_message(name))
        loaded = load_pretrained(model, info.weights.source, sha256=info.weights.sha256, allow_new_head=new_head)
    elif pretrained not in (False, None):
        loaded = load_pretrained(model, pretrained, allow_new_head=new_head)
        info = replace(info, weights=_ref_for(pretrained, loaded))
    else:
        loaded = None
    if loaded is not None and loaded.config is not None and loaded.head_loaded:
        info = _with_metadata(info, loaded.config)
    elif new_head:  # the classes and figures were those of the old head
        info = replace(info, categories=(), metrics={})
    model.info = info
    return model


# --- what ships ------------------------------------------------------------------------------------------------


def _read_lines(path: Path) -> tuple[str, ...]:
    return tuple(line for line in path.read_text().splitlines() if line)


def _published(name: str, dataset: str, metrics: dict[str, Any]) -> ModelInfo | None:
    """A published network without weights; None while its arch JSON (or family module) is not in the tree."""
    path = ARCHS_DIR / f"{name}.json"
    if not path.is_file():
        return None
    spec = spec_from_dict(json.loads(path.read_text()))
    if dataset == "imagenet":
        mean, std, categories = IMAGENET_MEAN, IMAGENET_STD, _read_lines(HERE / "data" / "imagenet_classes.txt")
    else:
        mean, std, categories = CIFAR10_MEAN, CIFAR10_STD, CIFAR10_CLASSES
    if metrics:
        metrics = {**metrics, "source": PUBLISHED}
    return ModelInfo(name, spec, dataset, _input_size(spec), mean, std, categories, AUTHORS, metrics)


def _register_builtins() -> None:
    published = {
        # Figures from /work/shared/reference/proxylessnas/README.md (authors' logs and paper) only.
        "proxyless_cpu": ("imagenet", {"top1": 0.7529}),
        "proxyless_gpu": ("imagenet", {"top1": 0.7508, "latency_ms": {"gpu_v100_b8_paper": 5.1}}),
        "proxyless_mobile": ("imagenet", {"top1": 0.7459, "latency_ms": {"mobile_pixel1_paper": 78.0}}),
        "proxyless_mobile_14": ("imagenet", {}),
        "proxyless_cifar": ("cifar10", {"top1": 1 - 0.0208}),
    }
    for name, (dataset, metrics) in published.items():
        info = _published(name, dataset, metrics)
        if info is not None:
            register_model(info)
    if PRETRAINED_DIR.is_dir():
        for d in sorted(PRETRAINED_DIR.iterdir()):
            if (d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file():
                register_model(weights_dir_info(d))


_register_builtins()
