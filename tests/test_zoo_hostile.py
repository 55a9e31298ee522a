"""Hostile inputs to the zoo (issue 27): oversize arch specs, bad PROXYLESS_ZOO_EXTRA entries, zip-bomb
checkpoints and weights paths that are devices. Each is refused with one line, fast, before memory is spent."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import zoo.registry as registry
from zoo import create_model, list_models
from zoo.arch import ArchSpec
from zoo.limits import ArchSizeError, SizeLimits
from zoo.network import ProxylessNet
from zoo.official import import_official
from zoo.registry import build_network, spec_from_dict
from zoo.weights import WeightsError, save_pretrained

ROOT = Path(__file__).parents[1]
META = {
    "dataset": "synthetic",
    "input_size": [1, 28, 28],
    "mean": [0.5],
    "std": [0.5],
    "categories": ["a", "b", "c"],
    "source": "test fixture",
    "metrics": {},
}
SMALL = {
    "format": "proxyless-arch/1",
    "name": "small",
    "blocks": ["mb3_k3_s2_c8", "mb3_k3_s1_c8_res"],
    "stem_channels": 8,
    "feature_mix": 16,
    "in_chans": 1,
    "input_size": 28,
    "num_classes": 3,
}
# Each would need terabytes (or hours) if built: absurd width, resolution, depth, classifier.
ABSURD = {
    "width": ({"blocks": ["mb6_k3_s1_c4000000000"]}, "MACs"),
    "resolution": ({"input_size": 4000, "stem_stride": 1, "blocks": ["mb6_k3_s1_c64"]}, "activation memory"),
    "depth": ({"blocks": ["mb1_k3_s1_c8_res"] * 100_000}, "block count"),
    "classes": ({"num_classes": 2_000_000_000}, "params"),
    "input_size": ({"input_size": 1_000_000}, "input_size"),
}


def _finishes(call: Callable[[], Any], seconds: float = 20.0) -> Any:
    """``call()``'s result (or exception), failing the test if it has not returned in ``seconds`` (a hang)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = call()
        except BaseException as e:  # handed to the test thread
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds:.0f} s"
    if "error" in result:
        raise result["error"]
    return result.get("value")


@pytest.mark.parametrize("case", sorted(ABSURD))
def test_an_absurd_arch_is_refused_before_it_is_built(case: str) -> None:
    fields, quantity = ABSURD[case]
    spec = spec_from_dict({**SMALL, **fields})
    with pytest.raises(ArchSizeError) as caught:
        _finishes(lambda: build_network(spec))
    message = str(caught.value)
    assert quantity in message and "PROXYLESS_ZOO_MAX_" in message and "\n" not in message, message


def test_size_limits_are_options_for_big_nets(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_from_dict(SMALL)
    params = sum(p.numel() for p in ProxylessNet(spec).parameters())
    monkeypatch.setenv("PROXYLESS_ZOO_MAX_PARAMS", str(params - 1))
    with pytest.raises(ArchSizeError, match=rf"params {params:,} is over the limit {params - 1:,}"):
        build_network(spec)
    monkeypatch.setenv("PROXYLESS_ZOO_MAX_PARAMS", str(params))
    assert sum(p.numel() for p in build_network(spec).parameters()) == params
    monkeypatch.delenv("PROXYLESS_ZOO_MAX_PARAMS")
    monkeypatch.setenv("PROXYLESS_ZOO_MAX_ACTIVATION_MB", "0")
    with pytest.raises(ArchSizeError, match="activation memory"):
        create_model("proxyless_mobile")
    assert SizeLimits.from_env().activation_mb == 0
    monkeypatch.setenv("PROXYLESS_ZOO_MAX_MACS", "lots")
    with pytest.raises(ArchSizeError, match="PROXYLESS_ZOO_MAX_MACS='lots': expected a number"):
        build_network(spec)


def _weights_dir(path: Path, arch: dict[str, Any] | None = None) -> Path:
    torch.manual_seed(0)
    spec = ArchSpec.from_dict(SMALL)
    out = save_pretrained(ProxylessNet(spec), path, META)
    if arch is not None:  # a config.json that declares another (absurd) arch for the same weights
        config = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**config, "arch": arch}))
    return out


def test_one_bad_extra_entry_is_skipped_with_one_warning_and_the_rest_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    good = _weights_dir(tmp_path / "good_net")
    huge = _weights_dir(tmp_path / "huge_net", {**SMALL, "name": "huge", "blocks": ["mb6_k3_s1_c4000000000"]})
    broken = _weights_dir(tmp_path / "broken_net")
    (broken / "config.json").write_text("{not json")
    missing = tmp_path / "no_such_folder"
    monkeypatch.setenv(registry.EXTRA_ENV, os.pathsep.join(map(str, (good, huge, broken, missing))))
    with caplog.at_level(logging.WARNING, logger="zoo.registry"):
        names = list_models(pretrained_only=True)
        list_models()  # warned once, not at every look-up
    assert "good_net" in names and not {"huge_net", "broken_net"} & set(names)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    for folder, why in ((huge, "MACs"), (broken, "not valid JSON"), (missing, "holds no config.json")):
        assert any(f"skipped {folder}: " in line and why in line for line in lines), (folder, lines)
    assert all("\n" not in line for line in lines)
    # the bundled nets, torch.hub and the demo's model list all still work
    assert create_model("good_net", pretrained=True).info.dataset == "synthetic"
    bundled = list_models(pretrained_only=True, dataset="fashion-mnist")
    if bundled:
        assert create_model(bundled[0], pretrained=True).info.dataset == "fashion-mnist"
    hubconf = importlib.util.module_from_spec(importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py"))
    hubconf.__spec__.loader.exec_module(hubconf)  # what torch.hub.list / load run
    assert callable(hubconf.good_net) and callable(hubconf.proxyless_mobile)
    assert torch.hub.load(str(ROOT), "good_net", source="local", pretrained=True).info.name == "good_net"


def _zip_bomb(path: Path, declared_mb: int) -> Path:
    """A torch.save zip whose one storage entry inflates to ``declared_mb`` MiB of zeros (stored deflated)."""
    buf = io.BytesIO()
    torch.save({"state_dict": {"first_conv.conv.weight": torch.zeros(4)}}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if "/data/" in info.filename:
                with dst.open(info.filename, "w", force_zip64=True) as out:
                    for _ in range(declared_mb):
                        out.write(bytes(2**20))
            else:
                dst.writestr(info.filename, src.read(info.filename))
    return path


def test_a_zip_bomb_checkpoint_is_refused_before_decompressing(tmp_path: Path, monkeypatch) -> None:
    bomb = _zip_bomb(tmp_path / "bomb.pth", 300)
    assert bomb.stat().st_size < 2 * 2**20
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran on the zip bomb"))
    with pytest.raises(WeightsError, match=r"bomb\.pth: declares 300\.0 MiB of data, over the .* refused before"):
        import_official("proxyless_mobile", bomb, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_weights_that_are_devices_are_refused_not_read(tmp_path: Path) -> None:
    device = Path("/dev/zero")
    if not device.exists():
        pytest.skip("no /dev/zero here")
    link = tmp_path / "weights.safetensors"
    link.symlink_to(device)
    with pytest.raises(WeightsError, match=r"weights\.safetensors: not a regular file"):
        _finishes(lambda: create_model("proxyless_mobile", pretrained=link))
    folder = _weights_dir(tmp_path / "devices")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(device)
    with pytest.raises(WeightsError, match=r"model\.safetensors: not a regular file"):
        _finishes(lambda: create_model("proxyless_mobile", pretrained=folder))
    folder = _weights_dir(tmp_path / "device_config")
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(device)
    for read in (
        lambda: registry.weights_dir_info(folder),
        lambda: create_model("proxyless_mobile", pretrained=folder),
    ):
        with pytest.raises(WeightsError, match=r"config\.json: not a regular file"):
            _finishes(read)
    with pytest.raises(WeightsError, match=r"bomb\.pth: not a regular file"):
        (tmp_path / "bomb.pth").symlink_to(device)
        _finishes(lambda: import_official("proxyless_mobile", tmp_path / "bomb.pth", tmp_path / "out"))


def test_an_oversize_config_is_not_read(tmp_path: Path) -> None:
    folder = _weights_dir(tmp_path / "padded")
    config = folder / "config.json"
    config.write_text(config.read_text() + " " * (5 * 2**20))
    with pytest.raises(WeightsError, match=r"config\.json: 5,2\d\d,\d\d\d bytes; a config\.json is at most 4,194,304"):
        registry.weights_dir_info(folder)


def test_export_of_an_absurd_arch_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from export.cli import main as export_main

    arch = tmp_path / "huge.json"
    arch.write_text(json.dumps({**SMALL, "name": "huge", "blocks": ["mb6_k3_s1_c4000000000"]}))
    assert export_main([str(arch), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: huge: MACs at input_size 28 ") and "over the limit" in err[0]
