"""torch.hub entrypoints of proxyless-zoo: one per registered model, and ``hf_hub`` for any published one.

    model = torch.hub.load("REPO_DIR_OR_OWNER/REPO", "proxyless_mobile", source="local", pretrained="DIR")
    model = torch.hub.load("REPO_DIR_OR_OWNER/REPO", "hf_hub", "ORG/REPO@REVISION", source="local")

``pretrained``: False (random init), True (the model's registered weights), a weights directory holding
``model.safetensors`` + ``config.json``, a ``.safetensors`` file, or ``"hf-hub:ORG/REPO@REVISION"``. Other
keyword arguments: ``num_classes`` (a new classifier when it differs from the weights'), or arch spec fields
(``dropout=0.2``). The returned network carries ``model.info`` (input size, mean/std, categories, metrics).
The authors' ImageNet weights cannot be downloaded by this project: convert your copy of their checkpoint with
``proxyless zoo import-official --arch NAME CKPT.pth --out DIR`` and pass ``pretrained=DIR``.
"""

from pathlib import Path as _Path
from typing import Any as _Any

from torch import nn as _nn

from zoo import registry as _registry

# Every third-party package the modules below import (tests/test_readme.py checks it): torch.hub checks them first.
dependencies = ["torch", "numpy", "safetensors", "huggingface_hub"]

_NO_WEIGHTS = (
    "No published weights can be fetched by this project: convert the authors' checkpoint with\n"
    "    proxyless zoo import-official --arch {name} CKPT.pth --out DIR\n"
    "and pass pretrained=DIR."
)


def proxyless_cpu(pretrained: bool | str | _Path = False, **kwargs: _Any) -> _nn.Module:
    """ProxylessNAS specialized for mobile CPUs: ImageNet, 3x224x224, 4.36M params, 439.2M MACs,
    75.29% top-1 (authors' logs).

    No published weights can be fetched by this project: convert the authors' checkpoint with
        proxyless zoo import-official --arch proxyless_cpu CKPT.pth --out DIR
    and pass pretrained=DIR.
    """
    return _registry.create_model("proxyless_cpu", pretrained=pretrained, **kwargs)


def proxyless_gpu(pretrained: bool | str | _Path = False, **kwargs: _Any) -> _nn.Module:
    """ProxylessNAS specialized for GPUs: ImageNet, 3x224x224, 7.12M params, 465.3M MACs, 75.08% top-1
    (authors' logs), 5.1 ms on a V100 at batch 8 (paper).

    No published weights can be fetched by this project: convert the authors' checkpoint with
        proxyless zoo import-official --arch proxyless_gpu CKPT.pth --out DIR
    and pass pretrained=DIR.
    """
    return _registry.create_model("proxyless_gpu", pretrained=pretrained, **kwargs)


def proxyless_mobile(pretrained: bool | str | _Path = False, **kwargs: _Any) -> _nn.Module:
    """ProxylessNAS specialized for mobile phones: ImageNet, 3x224x224, 4.08M params, 320.4M MACs,
    74.59% top-1 (authors' logs), 78 ms on a Pixel 1 (paper).

    No published weights can be fetched by this project: convert the authors' checkpoint with
        proxyless zoo import-official --arch proxyless_mobile CKPT.pth --out DIR
    and pass pretrained=DIR.
    """
    return _registry.create_model("proxyless_mobile", pretrained=pretrained, **kwargs)


def proxyless_mobile_14(pretrained: bool | str | _Path = False, **kwargs: _Any) -> _nn.Module:
    """ProxylessNAS-Mobile at width 1.4: ImageNet, 3x224x224, 6.86M params, 580.9M MACs (accuracy not in
    the reference data).

    No published weights can be fetched by this project: convert the authors' checkpoint with
        proxyless zoo import-official --arch proxyless_mobile_14 CKPT.pth --out DIR
    and pass pretrained=DIR.
    """
    return _registry.create_model("proxyless_mobile_14", pretrained=pretrained, **kwargs)


def proxyless_cifar(pretrained: bool | str | _Path = False, **kwargs: _Any) -> _nn.Module:
    """ProxylessNAS CIFAR-10 network (PyramidNet with tree-structured cells): 3x32x32, 5.73M params,
    1213.2M MACs, 97.92% test accuracy (paper: 2.08% error).

    No published weights can be fetched by this project: convert the authors' checkpoint with
        proxyless zoo import-official --arch proxyless_cifar CKPT.pth --out DIR
    and pass pretrained=DIR.
    """
    return _registry.create_model("proxyless_cifar", pretrained=pretrained, **kwargs)


def hf_hub(repo: str, pretrained: bool = True, **kwargs: _Any) -> _nn.Module:
    """Any network published with ``proxyless zoo publish``, registered here or not: ``repo`` is
    ``"ORG/REPO"`` or ``"ORG/REPO@REVISION"``; the arch and metadata come from that repo's ``config.json``, the
    weights are sha256-checked (``HF_HUB_OFFLINE=1`` reads the local cache)."""
    return _registry.create_model(f"hf-hub:{repo}", pretrained=pretrained, **kwargs)


def _entrypoint(name: str) -> _Any:
    """An entrypoint for a model registered from a weights directory (bundled or PROXYLESS_ZOO_EXTRA)."""
    info = _registry.get_model_info(name)

    def entry(pretrained: bool | str | _Path = False, **kwargs: _Any) -> _nn.Module:
        return _registry.create_model(name, pretrained=pretrained, **kwargs)

    top1 = f", {info.metrics['top1'] * 100:.2f}% top-1" if "top1" in info.metrics else ""
    weights = "pretrained=True loads its weights" if info.weights else _NO_WEIGHTS.format(name=name)
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"{name}: {info.dataset}, {'x'.join(map(str, info.input_size))}, {info.num_classes} classes{top1}.\n\n"
        f"Source: {info.source}\n{weights}"
    )
    return entry


for _name in _registry.list_models():
    if _name not in globals():
        globals()[_name] = _entrypoint(_name)
