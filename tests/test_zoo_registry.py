"""Registry, metadata, weights directories as models, the ``proxyless zoo`` CLI and hubconf."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import zoo.registry as registry
from zoo import create_model, get_model_info, list_models
from zoo.arch import ArchSpec, BlockSpec
from zoo.network import ProxylessNet
from zoo.proxyless_cli import main as proxyless_main
from zoo.registry import ZooError
from zoo.weights import WeightsError, save_pretrained

ROOT = Path(__file__).parents[1]
BUILTINS = {"proxyless_cpu", "proxyless_gpu", "proxyless_mobile", "proxyless_mobile_14", "proxyless_cifar"}
TINY_META = {
    "dataset": "fashion-mnist",
    "input_size": [1, 28, 28],
    "mean": [0.286],
    "std": [0.353],
    "categories": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"],
    "source": "test fixture",
    "metrics": {"top1": 0.5},
}


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    """A weights directory of a small net (stored fp16), as bundled or PROXYLESS_ZOO_EXTRA directories are."""
    blocks = tuple(map(BlockSpec.parse, ["mb1_k3_s1_c8", "mb3_k3_s2_c16", "mb3_k5_s1_c16_res"]))
    spec = ArchSpec("tiny", blocks, stem_channels=8, feature_mix=32, in_chans=1, input_size=28, num_classes=5)
    torch.manual_seed(0)
    return save_pretrained(ProxylessNet(spec), tmp_path / "tiny_fm", TINY_META, dtype=torch.float16)


def test_published_models_and_their_metadata() -> None:
    assert set(list_models()) >= BUILTINS
    assert not BUILTINS & set(list_models(pretrained_only=True))
    mobile = get_model_info("proxyless_mobile")
    assert (mobile.dataset, mobile.input_size, mobile.num_classes) == ("imagenet", (3, 224, 224), 1000)
    assert mobile.mean == (0.485, 0.456, 0.406) and mobile.std == (0.229, 0.224, 0.225)
    assert len(set(mobile.categories)) == 1000 and mobile.categories[:2] == ("tench", "goldfish")
    assert mobile.metrics["top1"] == 0.7459 and mobile.metrics["source"] == "paper/authors' logs"
    assert (mobile.params, round(mobile.macs / 1e6, 1)) == (4_080_512, 320.4) and mobile.weights is None
    assert get_model_info("proxyless_mobile_14").metrics == {}  # no published figure in the reference data
    cifar = get_model_info("proxyless_cifar")
    assert (cifar.dataset, cifar.input_size, cifar.params) == ("cifar10", (3, 32, 32), 5_731_530)
    assert cifar.categories[0] == "airplane" and cifar.mean == (0.4914, 0.4822, 0.4465)
    assert cifar.metrics["top1"] == pytest.approx(0.9792)


def test_create_model_options() -> None:
    no_weights = r"^proxyless_gpu: no published weights .*import-official --arch proxyless_gpu "
    with pytest.raises(WeightsError, match=no_weights):
        create_model("proxyless_gpu", pretrained=True)
    with pytest.raises(ZooError, match=r"unknown model 'nope'; known: .*proxyless_mobile"):
        create_model("nope")
    with pytest.raises(ZooError, match="unknown option 'widht'"):
        create_model("proxyless_mobile", widht=2)
    model = create_model("proxyless_mobile", num_classes=10, dropout=0.3)
    assert model.classifier.linear.out_features == 10 and model.spec.dropout == 0.3
    assert model.info.num_classes == 10 and model.info.categories == () and model.info.metrics == {}
    assert model.info.params == 4_080_512 - 990 * 1281
    assert get_model_info("proxyless_mobile").num_classes == 1000


def test_weights_directory_registers_as_model(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert "tiny_fm" not in list_models()
    monkeypatch.setenv(registry.EXTRA_ENV, str(tiny_dir))
    assert "tiny_fm" in list_models(pretrained_only=True)
    assert "tiny_fm" in list_models(pretrained_only=True, dataset="fashion-mnist")
    assert "tiny_fm" not in list_models(dataset="imagenet") and "proxyless_mobile" in list_models(dataset="imagenet")
    info = get_model_info("tiny_fm")
    assert (info.dataset, info.input_size, info.categories[1]) == ("fashion-mnist", (1, 28, 28), "Trouser")
    model = create_model("tiny_fm", pretrained=True).eval()
    assert next(model.parameters()).dtype == torch.float32
    assert model.info.weights.local_path == str(tiny_dir.resolve()) and model.info.metrics == {"top1": 0.5}
    # A new head keeps every other weight: the features are unchanged, categories no longer known.
    x = torch.randn(3, 1, 28, 28)
    new = create_model("tiny_fm", pretrained=True, num_classes=3).eval()
    with torch.no_grad():
        assert torch.equal(new.forward_features(x), model.forward_features(x))
    assert new(x).shape == (3, 3) and new.info.categories == ()
    monkeypatch.setenv(registry.EXTRA_ENV, str(tiny_dir.parent))
    with caplog.at_level(logging.WARNING, logger="zoo.registry"):
        assert "tiny_fm" not in list_models()
    assert re.search(rf"{registry.EXTRA_ENV}: skipped .* holds no config\.json", caplog.text), caplog.text


def test_several_extra_directories_separated_by_pathsep(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PROXYLESS_ZOO_EXTRA=DIR1<os.pathsep>DIR2: each directory is its own model, with its own weights."""
    blocks = tuple(map(BlockSpec.parse, ["mb3_k3_s2_c8", "mb6_k5_s1_c8_res"]))
    spec = ArchSpec("other", blocks, stem_channels=8, feature_mix=16, in_chans=1, input_size=28, num_classes=3)
    torch.manual_seed(1)
    meta = TINY_META | {"dataset": "synthetic", "categories": ["a", "b", "c"], "metrics": {"top1": 0.25}}
    other_dir = save_pretrained(ProxylessNet(spec), tiny_dir.parent / "more" / "other_syn", meta)
    assert {"tiny_fm", "other_syn"}.isdisjoint(list_models())
    for value in (f"{tiny_dir}{os.pathsep}{other_dir}", f"{os.pathsep}{other_dir}{os.pathsep}{tiny_dir}{os.pathsep}"):
        monkeypatch.setenv(registry.EXTRA_ENV, value)
        assert {"tiny_fm", "other_syn"} <= set(list_models(pretrained_only=True))
        assert "tiny_fm" in list_models(dataset="fashion-mnist") and "tiny_fm" not in list_models(dataset="synthetic")
        assert "other_syn" in list_models(dataset="synthetic") and "other_syn" not in list_models(
            dataset="fashion-mnist"
        )
        assert get_model_info("other_syn").categories == ("a", "b", "c") and get_model_info("tiny_fm").num_classes == 5
        for name, folder in (("tiny_fm", tiny_dir), ("other_syn", other_dir)):
            model = create_model(name, pretrained=True)
            assert model.info.weights.local_path == str(folder.resolve())
            arch = json.loads((folder / "config.json").read_text())["arch"]
            assert model.spec.to_dict() | {"name": None} == arch | {"name": None}  # its own network
            saved = load_file(folder / "model.safetensors")
            state = model.state_dict()
            assert saved and set(saved) <= set(state)
            for k, v in saved.items():  # its own weights
                assert torch.equal(state[k], v.to(state[k].dtype)), (name, k)
    monkeypatch.setenv(registry.EXTRA_ENV, f"{tiny_dir}{os.pathsep}{other_dir.parent}")  # the second is no model
    with caplog.at_level(logging.WARNING, logger="zoo.registry"):
        assert "tiny_fm" in list_models()
    assert f"{registry.EXTRA_ENV}: skipped {other_dir.parent}: {other_dir.parent} holds no" in caplog.text


def test_extra_directories_may_not_share_or_take_a_name(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first directory of a name is the model; a later one (or one named as a registered model) is skipped."""
    twin = shutil.copytree(tiny_dir, tiny_dir.parent / "elsewhere" / tiny_dir.name)
    monkeypatch.setenv(registry.EXTRA_ENV, f"{tiny_dir}{os.pathsep}{twin}")
    with caplog.at_level(logging.WARNING, logger="zoo.registry"):
        assert create_model("tiny_fm", pretrained=True).info.weights.local_path == str(tiny_dir.resolve())
    assert "are both named 'tiny_fm'; rename a folder" in caplog.text
    builtin = shutil.copytree(tiny_dir, tiny_dir.parent / "proxyless_mobile")
    monkeypatch.setenv(registry.EXTRA_ENV, str(builtin))
    with caplog.at_level(logging.WARNING, logger="zoo.registry"):
        assert create_model("proxyless_mobile").info.dataset == "imagenet"  # the registered one
    assert "and a registered model are both named 'proxyless_mobile'" in caplog.text


def test_bundled_directories_are_scanned(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tiny_dir.parent / "not_weights").mkdir()
    monkeypatch.setattr(registry, "PRETRAINED_DIR", tiny_dir.parent)
    monkeypatch.setattr(registry, "_BASE", {})
    registry._register_builtins()
    assert set(list_models(pretrained_only=True)) == {"tiny_fm"} and set(list_models()) == BUILTINS | {"tiny_fm"}


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_cli_list_and_info(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv(registry.EXTRA_ENV, str(tiny_dir))
    assert proxyless_main(["zoo", "list", "--json"]) == 0
    out = capsys.readouterr().out
    rows = {r["name"]: r for r in _last_json(out)["models"]}
    bundled = {d.name for d in (ROOT / "zoo" / "pretrained").glob("*") if (d / "config.json").is_file()}
    assert set(rows) == BUILTINS | bundled | {"tiny_fm"} and rows["proxyless_gpu"]["params"] == 7_119_848
    assert rows["tiny_fm"]["weights"]["source"] == str(tiny_dir.resolve()) and rows["proxyless_gpu"]["weights"] is None
    assert re.search(r"proxyless_cpu\s+imagenet\s+3x224x224\s+4\.36M\s+439\.2M\s+75\.29%\s+none", out)
    assert proxyless_main(["zoo", "info", "proxyless_mobile", "--json"]) == 0
    out = capsys.readouterr().out
    info = _last_json(out)
    assert info["macs"] == 320_427_584 and len(info["categories"]) == 1000
    assert info["arch"]["name"] == "proxyless_mobile" and info["metrics"]["top1"] == 0.7459
    assert "weights: none. no published weights" in out and "import-official --arch proxyless_mobile" in out
    assert proxyless_main(["zoo", "info", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown model 'nope'")


def _hubconf():
    """hubconf.py imported as torch.hub imports it (a fresh module from the file)."""
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hubconf_lists_one_documented_entrypoint_per_model(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.EXTRA_ENV, str(tiny_dir))
    hub = _hubconf()
    # torch.hub.list's rule (it only takes GitHub repos): public callables of hubconf are the entrypoints.
    entrypoints = {f for f in dir(hub) if callable(getattr(hub, f)) and not f.startswith("_")}
    assert entrypoints == {*list_models(), "hf_hub"}
    assert hub.dependencies == ["torch", "numpy", "safetensors", "huggingface_hub"]
    for name in BUILTINS:
        doc, info = getattr(hub, name).__doc__, get_model_info(name)
        assert f"{info.params / 1e6:.2f}M params, {info.macs / 1e6:.1f}M MACs" in " ".join(doc.split()), name
        assert f"import-official --arch {name} " in doc
    assert "fashion-mnist, 1x28x28, 5 classes, 50.00% top-1" in hub.tiny_fm.__doc__
    model = torch.hub.load(str(ROOT), "tiny_fm", source="local", pretrained=True)
    assert model.info.weights is not None and model.info.name == "tiny_fm"
