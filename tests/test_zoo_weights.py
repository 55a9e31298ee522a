"""Weights: safetensors / import-official / torch.hub round trips give identical logits; bad files are refused."""

from __future__ import annotations

import json
import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from zoo import create_model
from zoo.arch import ArchSpec, BlockSpec
from zoo.cli import main as zoo_main
from zoo.files import OutputError
from zoo.network import ProxylessNet
from zoo.official import import_official
from zoo.weights import WeightsError, load_pretrained, read_config, save_pretrained, sha256_file

ROOT = Path(__file__).parents[1]
TINY = dict(stem_channels=8, feature_mix=32, input_size=32, num_classes=5)


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights *and* BatchNorm statistics, so a load that skipped anything would change the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point() and t.dim() == 1:  # BN weight/bias/mean/var, classifier bias
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.5)
    return model.eval()


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def mobile() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = randomized(create_model("proxyless_mobile"))
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))  # any size: global pooling
    out = logits(model, x)
    assert out.shape == (2, 1000) and out.std() > 1e-3
    return model, x, out


@pytest.fixture(scope="module")
def mobile_dir(mobile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pretrained(mobile[0], tmp_path_factory.mktemp("w") / "proxyless_mobile", mobile[0].info)


def test_safetensors_round_trip_is_exact(mobile, mobile_dir: Path) -> None:
    model, x, out = mobile
    config = read_config(mobile_dir)
    assert config["weights_sha256"] == sha256_file(mobile_dir / "model.safetensors")
    assert config["arch"] == model.spec.to_dict() and config["metadata"]["input_size"] == [3, 224, 224]
    assert sorted(p.name for p in mobile_dir.iterdir()) == ["config.json", "model.safetensors"]
    loaded = create_model("proxyless_mobile", pretrained=mobile_dir)
    assert torch.equal(logits(loaded, x), out)
    assert loaded.info.weights.local_path == str(mobile_dir) and len(loaded.info.categories) == 1000


def test_a_failed_config_write_keeps_the_old_pair(mobile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, out = mobile
    d = save_pretrained(model, tmp_path / "w", model.info)
    before = {p.name: p.read_bytes() for p in d.iterdir()}

    def disk_full(*_: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr("zoo.weights.atomic_write", disk_full)
    with pytest.raises(OutputError, match=rf"cannot write model.safetensors in {d}: No space left"):
        save_pretrained(model, d, model.info, dtype=torch.float16)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # no new weights, no temp file
    assert torch.equal(logits(create_model("proxyless_mobile", pretrained=d), x), out)


def test_fp16_storage_loads_into_fp32(mobile, tmp_path: Path) -> None:
    model, x, out = mobile
    d = save_pretrained(model, tmp_path / "half", model.info, dtype=torch.float16)
    assert (d / "model.safetensors").stat().st_size < 0.6 * 4 * model.info.params
    loaded = create_model("proxyless_mobile", pretrained=d)
    assert next(loaded.parameters()).dtype == torch.float32
    torch.testing.assert_close(logits(loaded, x), out, rtol=0.05, atol=0.05)


def test_import_official_and_torch_hub_round_trip(mobile, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model, x, out = mobile
    ckpt = tmp_path / "proxyless_mobile.pth"
    state = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state, "epoch": 300}, ckpt)  # authors' style: DataParallel names, pre-0.4.1 BN
    out_dir = tmp_path / "imported"
    assert zoo_main(["import-official", "--arch", "proxyless_mobile", str(ckpt), "--out", str(out_dir)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["weights_sha256"] == sha256_file(out_dir / "model.safetensors")
    imported = create_model("proxyless_mobile", pretrained=out_dir)
    assert torch.equal(logits(imported, x), out)
    assert sha256_file(ckpt) in imported.info.source
    hub = torch.hub.load(str(ROOT), "proxyless_mobile", source="local", pretrained=str(out_dir))
    assert torch.equal(logits(hub, x), out)
    assert hub.info.name == "proxyless_mobile" and hub.info.input_size == (3, 224, 224)
    argv = ["import-official", "--arch", "proxyless_mobile", str(ckpt), "--out", str(out_dir)]
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert zoo_main(argv) == 2  # a used folder, as for every --out
    assert capsys.readouterr().err.startswith(f"error: --out {out_dir}: exists and is not an empty folder")
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    assert zoo_main([*argv, "--force"]) == 0


def test_flipped_byte_is_refused(mobile_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "proxyless_mobile"
    bad.mkdir()
    (bad / "config.json").write_bytes((mobile_dir / "config.json").read_bytes())
    data = bytearray((mobile_dir / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"model\.safetensors: sha256 mismatch .* corrupt") as e:
        create_model("proxyless_mobile", pretrained=bad)
    assert "\n" not in str(e.value)


def test_missing_files_are_named(mobile_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"model\.safetensors: missing"):
        create_model("proxyless_mobile", pretrained=tmp_path)
    with pytest.raises(WeightsError, match="no such file or directory"):
        create_model("proxyless_mobile", pretrained=tmp_path / "nope")
    half = tmp_path / "no_config"
    half.mkdir()
    (half / "config.json").write_text("{}")
    (half / "model.safetensors").write_bytes((mobile_dir / "model.safetensors").read_bytes())
    with pytest.raises(WeightsError, match=r"config\.json: no 'arch' entry"):
        create_model("proxyless_mobile", pretrained=half)


def test_weights_of_another_arch_are_refused(mobile, mobile_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"another architecture \('proxyless_mobile', the network is 'proxyless_cpu"):
        create_model("proxyless_cpu", pretrained=mobile_dir)
    # Same state_dict shapes, different stride: only the config's arch can tell them apart.
    a = ArchSpec("tiny_a", tuple(map(BlockSpec.parse, ["mb1_k3_s1_c8", "mb3_k3_s2_c16"])), **TINY)
    b = ArchSpec("tiny_b", tuple(map(BlockSpec.parse, ["mb1_k3_s1_c8", "mb3_k3_s1_c16"])), **TINY)
    meta = {"dataset": "x", "input_size": [3, 32, 32], "mean": [0.5], "std": [0.5], "categories": list("abcde"),
            "source": "test", "metrics": {}}  # fmt: skip
    d = save_pretrained(ProxylessNet(a), tmp_path / "a", meta)
    with pytest.raises(WeightsError, match=r"block 1: \"mb3_k3_s2_c16\" vs \"mb3_k3_s1_c16\""):
        load_pretrained(ProxylessNet(b), d)
    # A bare safetensors file has no config: names and shapes are checked, the first misfit named.
    bare = tmp_path / "cpu.safetensors"
    save_file(create_model("proxyless_cpu").state_dict(), bare)
    with pytest.raises(WeightsError, match=r"another architecture: 'first_conv\.bn\.weight' has shape \[40\]"):
        create_model("proxyless_mobile", pretrained=bare)
    # import-official: an authors' checkpoint of proxyless_cpu named as proxyless_gpu
    ckpt = tmp_path / "cpu.pth"
    torch.save({"state_dict": create_model("proxyless_cpu").state_dict()}, ckpt)
    with pytest.raises(WeightsError, match=r"cpu\.pth: weights for another architecture: 'blocks\.1\..* has shape"):
        import_official("proxyless_gpu", ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bare_safetensors_file_loads(mobile, tmp_path: Path) -> None:
    model, x, out = mobile
    f = tmp_path / "weights.safetensors"
    save_file(model.state_dict(), f)
    loaded = create_model("proxyless_mobile", pretrained=f)
    assert torch.equal(logits(loaded, x), out) and loaded.info.weights.sha256 == sha256_file(f)


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_malicious_pickle_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    live = tmp_path / "proof_the_payload_works"
    pickle.loads(pickle.dumps(_Payload(live)))
    assert live.exists()
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    torch.save({"state_dict": {"first_conv.conv.weight": torch.zeros(1), "x": _Payload(marker)}}, ckpt)
    with pytest.raises(WeightsError, match=r"evil\.pth: refused: .*posix\.system.*nothing from it was run"):
        import_official("proxyless_mobile", ckpt, tmp_path / "out")
    assert zoo_main(["import-official", "--arch", "proxyless_mobile", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # a refused checkpoint leaves no folder behind
    with pytest.raises(WeightsError, match=r"not a \.safetensors file; convert .* import-official"):
        create_model("proxyless_mobile", pretrained=ckpt)
    assert not marker.exists()


def _fake_hub_cache(cache: Path, repo: str, weights: Path, commit: str) -> None:
    """The Hugging Face cache layout hf_hub_download reads offline: refs/main -> snapshots/<commit>/files."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snap / name).write_bytes((weights / name).read_bytes())
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)


def test_hf_hub_source_offline_from_cache(mobile, mobile_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from dataclasses import replace

    from zoo.registry import get_model_info, register_model
    from zoo.weights import WeightsRef

    _, x, out = mobile
    commit = "0123456789abcdef0123456789abcdef01234567"
    _fake_hub_cache(tmp_path, "org/mobile", mobile_dir, commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for ref in (f"hf-hub:org/mobile@{commit}", "hf-hub:org/mobile"):
        loaded = create_model("proxyless_mobile", pretrained=ref)
        assert torch.equal(logits(loaded, x), out) and loaded.info.weights.repo_id == "org/mobile"
    with pytest.raises(WeightsError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        create_model("proxyless_mobile", pretrained="hf-hub:org/absent@main")
    with pytest.raises(WeightsError, match="bad Hub source"):
        create_model("proxyless_mobile", pretrained="hf-hub:no-slash")
    # A registered model pins repo, revision and sha256; pretrained=True goes through the same path.
    info = get_model_info("proxyless_mobile")
    sha = sha256_file(mobile_dir / "model.safetensors")
    monkeypatch.setattr("zoo.registry._BASE", {})
    register_model(replace(info, name="hubbed", weights=WeightsRef(sha, "org/mobile", commit)))
    assert torch.equal(logits(create_model("hubbed", pretrained=True), x), out)
    register_model(replace(info, name="wrong", weights=WeightsRef("0" * 64, "org/mobile", commit)))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        create_model("wrong", pretrained=True)
