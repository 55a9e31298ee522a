"""``proxyless zoo publish`` and Hub loading, end to end against a local server speaking the Hub's HTTP API.

Client steps run in subprocesses with HF_ENDPOINT / HF_HOME / HF_TOKEN set, exactly as a user runs them, through
the unchanged huggingface_hub client (see tests/hub_server.py for what the server implements).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from test_zoo_weights import randomized

from zoo.arch import ArchSpec, BlockSpec
from zoo.network import ProxylessNet
from zoo.weights import save_pretrained, sha256_file

ROOT = Path(__file__).resolve().parents[1]
REPO = "proxyless-test/fmnist-tiny"
TOP1 = 0.9123
BLOCKS = ("mb1_k3_s1_c16", "mb3_k3_s2_c24", "zero", "mb6_k5_s2_c40", "mb3_k3_s1_c40_res")
REPORT = {  # the shape of export's benchmark report (export/report.py)
    "env": {"cpu": "Test CPU 9000", "cpu_cores": 2, "gpu": None},
    "settings": {"device": "cpu", "threads": 1, "warmup": 5, "iters": 50, "rounds": 5},
    "unavailable": {"tensorrt": "no CUDA GPU on this machine"},
    "models": [{"name": "fmnist_tiny", "input_shape": [1, 1, 28, 28], "weights": "random"}],
    "results": [
        {"model": "fmnist_tiny", "runtime": "torch", "provider": "", "batch": 1, "p50_ms": 0.93},
        {"model": "fmnist_tiny", "runtime": "onnxruntime", "provider": "CPUExecutionProvider", "batch": 1,
         "p50_ms": 0.41},
    ],
}  # fmt: skip
# A fresh process loads the published weights three times: through a registry entry pinned with the exact line
# publish printed, and by running the model card's create_model and torch.hub snippets (hubconf.py of this clone).
LOADER = r"""
import json, re, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from zoo.registry import create_model, info_from_config, register_model
from zoo.weights import WeightsRef, read_config

config_json, ref_line, card, out, ROOT = sys.argv[1:6]
weights = eval(ref_line, {"WeightsRef": WeightsRef})
register_model(info_from_config("tiny_pinned", read_config(config_json), weights))
x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
pinned = create_model("tiny_pinned", pretrained=True).eval()
bad_pin = WeightsRef("0" * 64, weights.repo_id, weights.revision)
register_model(info_from_config("tiny_bad", read_config(config_json), bad_pin))
try:
    create_model("tiny_bad", pretrained=True)
    refused = None
except ValueError as e:
    refused = str(e)
snippets = re.findall(r"```python\n(.*?)```", Path(card).read_text(), re.S)
scope = {"images": x}
with torch.no_grad():
    exec(snippets[0], scope)
    exec(snippets[1].replace("path/to/proxyless-zoo", ROOT), scope)
    hub = scope["model"](x)
    save_file({"pinned": pinned(x), "card_snippet": scope["logits"], "card_torch_hub": hub}, out)
print(json.dumps({"weights": pinned.info.weights.source, "sha256": pinned.info.weights.sha256, "bad": refused}))
"""


def _spec(name: str = "fmnist_tiny") -> ArchSpec:
    """Fashion-MNIST-shaped (28x28x1, 10 classes, stride-1 stem) but tiny, so each test stays fast."""
    blocks = tuple(BlockSpec.parse(b) for b in BLOCKS)
    return ArchSpec(name, blocks, stem_channels=24, stem_stride=1, feature_mix=64, in_chans=1, input_size=28,
                    num_classes=10)  # fmt: skip


def _metadata() -> dict:
    return {
        "dataset": "fashion-mnist",
        "input_size": [1, 28, 28],
        "mean": [0.286],
        "std": [0.353],
        "categories": [f"class{i}" for i in range(10)],
        "source": "random weights (test)",
        "metrics": {"top1": TOP1, "search": {"space": "fmnist", "target": "cpu"}},
    }


def _export_onnx(model: torch.nn.Module, path: Path) -> None:
    """Legacy exporter: sub-second here (the dynamo one takes ~10 s on this machine)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, input_names=["input"])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A saved tiny model (weights dir), its ONNX export, an export report and its reference logits."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = randomized(ProxylessNet(_spec()))  # random BN stats too: a loader skipping buffers shows
    weights = save_pretrained(model, root / "fmnist_tiny", _metadata())
    _export_onnx(model, root / "model.onnx")
    (root / "report.json").write_text(json.dumps(REPORT))
    # The reference is the ORIGINAL model's output: a loader that skipped the BN buffers (or anything else) would
    # rebuild a net with default statistics and give other logits.
    params_only = ProxylessNet(_spec())
    params_only.load_state_dict(dict(model.named_parameters()), strict=False)  # default BN buffers
    assert not torch.allclose(_logits(params_only), _logits(model), atol=1e-3)
    return {"dir": weights, "onnx": root / "model.onnx", "report": root / "report.json", "logits": _logits(model)}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _publish_args(tiny: dict, *extra: str) -> list[str]:
    return ["-m", "zoo", "publish", str(tiny["dir"]), "--repo-id", REPO, "--json", *extra]


def _client_env(hub: HubServer, tmp: Path) -> dict[str, str]:
    """A user's shell: the server as HF_ENDPOINT, its token, a fresh HF_HOME and its own TMPDIR."""
    for d in ("home", "tmp"):
        (tmp / d).mkdir(exist_ok=True)
    return hub.client_env(dict(os.environ), HF_HOME=str(tmp / "home"), TMPDIR=str(tmp / "tmp"), OMP_NUM_THREADS="1")


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The CLI's one-line error (progress bars and warnings aside)."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def test_publish_then_load_online_then_offline(tiny: dict, tmp_path: Path) -> None:
    with HubServer() as hub:
        env = _client_env(hub, tmp_path)
        args = _publish_args(tiny, "--revision", "v1", "--onnx", str(tiny["onnx"]), "--report", str(tiny["report"]))
        proc = _run(args, env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        commit, sha = result["commit"], result["sha256"]
        ref_line = result["weights_ref"]
        assert f"    weights={ref_line}," in proc.stdout.splitlines()  # the line to paste, printed as such
        assert sha == sha256_file(tiny["dir"] / "model.safetensors")
        assert hub.state.repos[REPO].branches["v1"] == commit
        assert "PUT lfs_upload" in hub.state.requests  # the weights went through the LFS batch API
        for name in ("model.safetensors", "config.json", "model.onnx", "README.md"):
            assert hub.state.file(REPO, commit, name) is not None, name
        assert hub.state.file(REPO, commit, "model.onnx") == tiny["onnx"].read_bytes()
        card = tmp_path / "README.md"
        card.write_bytes(hub.state.file(REPO, commit, "README.md"))
        assert ModelCard.load(card).data.eval_results[0].metric_value == TOP1
        assert f"- Weights sha256: `{sha}`" in card.read_text()

        out = tmp_path / "logits.safetensors"
        loader = ["-c", LOADER, str(tiny["dir"] / "config.json"), ref_line, str(card), str(out), str(ROOT)]
        online = _run(loader, env)
        assert online.returncode == 0, online.stderr[-3000:]
        loaded = json.loads(online.stdout.splitlines()[-1])
        assert (loaded["weights"], loaded["sha256"]) == (f"hf-hub:{REPO}@{commit}", sha)
        assert "sha256 mismatch" in loaded["bad"]  # a pin that does not match the bytes is refused
        logits = load_file(out)
        assert sorted(logits) == ["card_snippet", "card_torch_hub", "pinned"]
        for value in logits.values():
            torch.testing.assert_close(value, tiny["logits"], rtol=0, atol=0)
        snapshot = tmp_path / "home" / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit
        assert (snapshot / "model.safetensors").is_file()
    # Server gone: offline, the same process reads the cache.
    out.unlink()
    offline = _run(loader, {**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr[-3000:]
    for value in load_file(out).values():
        torch.testing.assert_close(value, tiny["logits"], rtol=0, atol=0)


def test_refuses_a_repo_holding_another_model_unless_forced(tiny: dict, tmp_path: Path) -> None:
    other = {"arch": _spec("other_net").to_dict() | {"blocks": ["mb6_k7_s2_c24"]}, "metadata": {}, "weights_sha256": ""}
    with HubServer() as hub:
        before = hub.state.seed(REPO, {"config.json": json.dumps(other).encode()})
        env = _client_env(hub, tmp_path)
        proc = _run(_publish_args(tiny, "--no-onnx"), env)
        line = _error_line(proc)
        assert "already holds another model ('other_net')" in line and "--force" in line
        assert hub.state.repos[REPO].branches["main"] == before
        assert list((tmp_path / "tmp").iterdir()) == []
        forced = _run(_publish_args(tiny, "--force", "--no-onnx"), env)
        assert forced.returncode == 0, forced.stderr[-3000:]
        commit = json.loads(forced.stdout.splitlines()[-1])["commit"]
        assert json.loads(hub.state.file(REPO, commit, "config.json"))["arch"]["name"] == "fmnist_tiny"


def test_a_retrained_version_replaces_the_old_without_force(tiny: dict, tmp_path: Path) -> None:
    """Same network, other training: dropout and the search/training metadata may differ; nothing else."""
    old = _spec().to_dict() | {"dropout": 0.2, "extra": {"train": {"epochs": 3}}}
    with HubServer() as hub:
        files = {"config.json": json.dumps({"arch": old, "metadata": {}}).encode(), "model.onnx": b"old weights"}
        seeded = hub.state.seed(REPO, files)
        proc = _run(_publish_args(tiny, "--no-onnx"), _client_env(hub, tmp_path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        commit = json.loads(proc.stdout.strip().splitlines()[-1])["commit"]
        assert commit != seeded and hub.state.repos[REPO].branches["main"] == commit  # main moved to the new commit
        published = json.loads(hub.state.file(REPO, commit, "config.json"))
        assert published["arch"] == _spec().to_dict()  # the retrained model's arch (its name too), not the old one
        assert published["weights_sha256"] == sha256_file(tiny["dir"] / "model.safetensors")
        assert hub.state.file(REPO, commit, "model.onnx") is None  # --no-onnx: the old weights' ONNX is deleted
        assert json.loads(hub.state.file(REPO, seeded, "config.json"))["arch"] == old  # history kept, not rewritten


def test_describing_a_hub_model_fetches_its_config_only(tiny: dict, tmp_path: Path) -> None:
    files = {name: (tiny["dir"] / name).read_bytes() for name in ("config.json", "model.safetensors")}
    script = (
        "import sys; from zoo import create_model; "
        "m = create_model(sys.argv[1], pretrained=sys.argv[2] == '1'); print(m.info.weights.source)"
    )
    with HubServer() as hub:
        hub.state.seed(REPO, files)
        env = _client_env(hub, tmp_path)
        bare = _run(["-c", script, f"hf-hub:{REPO}", "0"], env)
        assert bare.returncode == 0, bare.stderr[-3000:]
        assert bare.stdout.split() == [f"hf-hub:{REPO}"] and hub.state.requests.count("GET resolve") == 1
        loaded = _run(["-c", script, f"hf-hub:{REPO}", "1"], env)
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        assert hub.state.requests.count("GET resolve") == 2  # now the weights (config.json came from the cache)


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_upload_failure_leaves_nothing_behind(tiny: dict, tmp_path: Path, fault: str) -> None:
    with HubServer() as hub:
        hub.faults["commit"] = fault  # weights already uploaded through LFS, then the commit fails
        env = _client_env(hub, tmp_path)
        proc = _run(_publish_args(tiny, "--no-onnx"), env)
        line = _error_line(proc)
        assert line.startswith(f"error: upload to {hub.url}/{REPO}@main failed: ")
        assert "PUT lfs_upload" in hub.state.requests and "POST commit" in hub.state.requests
        repo = hub.state.repos[REPO]
        assert set(repo.commits[repo.branches["main"]]) == {".gitattributes"}  # nothing committed
    assert list((tmp_path / "tmp").iterdir()) == []  # the staging folder is gone


def test_no_token_is_one_clear_error(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from huggingface_hub import constants

    from zoo.cli import main

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert main(["publish", str(tiny["dir"]), "--repo-id", REPO]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: no Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass --token"
    assert list(tmp_path.iterdir()) == []


def test_dry_run_writes_a_card_that_round_trips(tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from zoo.cli import main

    out = tmp_path / "repo"
    args = ["publish", str(tiny["dir"]), "--repo-id", REPO, "--dry-run", str(out), "--report", str(tiny["report"])]
    assert main([*args, "--onnx", str(tiny["onnx"])]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no DIR.tmp-* left beside it
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.onnx", "model.safetensors"]
    card = ModelCard.load(out / "README.md")
    result = card.data.eval_results[0]
    assert (result.metric_type, result.metric_value, result.dataset_split) == ("accuracy", TOP1, "test")
    assert card.data.pipeline_tag == "image-classification" and card.data.library_name
    text = card.text
    row = "| Test CPU 9000, 1 thread(s) / onnxruntime (CPUExecutionProvider) | 1 | 0.41 | report.json (p50) |"
    assert row in text and "| Test CPU 9000, 1 thread(s) / torch | 1 | 0.93 |" in text
    assert "Not measured: tensorrt: no CUDA GPU on this machine." in text
    assert "| 3 | MBConv6 5x5 | 2 | 24 → 40 | 7x7 |" in text and "| 2 | zero (layer skipped) |" in text
    assert "- space: fmnist" in text and "arXiv:1812.00332" in text
    config = json.loads((out / "config.json").read_text())
    assert config["weights_sha256"] == sha256_file(out / "model.safetensors")
    capsys.readouterr()
    assert main([*args]) == 2  # DIR now exists: refused, untouched
    assert "exists and is not an empty folder" in capsys.readouterr().err  # the wording of every --out
    assert (out / "model.onnx").is_file()


def test_card_names_the_code_repo_for_torch_hub(tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from zoo.cli import main

    args = ["publish", str(tiny["dir"]), "--repo-id", REPO, "--revision", "v2", "--no-onnx", "--dry-run"]
    assert main([*args, str(tmp_path / "a"), "--code-repo", "someone/proxyless-zoo:v0.1"]) == 0
    text = (tmp_path / "a" / "README.md").read_text()
    assert f'torch.hub.load("someone/proxyless-zoo:v0.1", "hf_hub", "{REPO}@v2")' in text
    assert main([*args, str(tmp_path / "b"), "--code-repo", "https://github.com/x"]) == 2
    assert "--code-repo 'https://github.com/x': expected GitHub OWNER/REPO[:REF]" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_onnx_of_other_weights_is_refused(tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from zoo.cli import main

    torch.manual_seed(1)
    other = tmp_path / "other.onnx"
    _export_onnx(ProxylessNet(_spec()).eval(), other)
    argv = ["publish", str(tiny["dir"]), "--repo-id", REPO, "--dry-run", str(tmp_path / "repo"), "--onnx", str(other)]
    assert main(argv) == 2
    assert "logits differ from the weights" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.onnx"]  # no DIR, no DIR.tmp-*


def test_dry_run_exports_onnx_by_default_and_no_onnx_leaves_it_out(
    tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The card promises an ONNX file: without --onnx FILE, publish exports one from the weights it publishes."""
    import numpy as np
    import onnxruntime as ort

    from zoo.cli import main

    args = ["publish", str(tiny["dir"]), "--repo-id", REPO, "--dry-run"]
    out = tmp_path / "default"
    assert main([*args, str(out)]) == 0
    assert "model.onnx (exported here): matches the weights" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.onnx", "model.safetensors"]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))  # _logits' first 2 images, 3 more
    (logits,) = session.run(["logits"], {"input": x.numpy()})  # a dynamic batch, the names the card's code uses
    np.testing.assert_allclose(logits[:2], tiny["logits"].numpy(), atol=1e-4, rtol=0)
    card = ModelCard.load(out / "README.md")
    assert "onnx" in card.data.tags and f'hf_hub_download("{REPO}", "model.onnx")' in card.text

    bare = tmp_path / "no-onnx"
    assert main([*args, str(bare), "--no-onnx"]) == 0
    assert sorted(p.name for p in bare.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = ModelCard.load(bare / "README.md")
    assert "onnx" not in (card.data.tags or []) and "model.onnx" not in card.text
    with pytest.raises(SystemExit):
        main([*args, str(tmp_path / "both"), "--no-onnx", "--onnx", str(tiny["onnx"])])
    assert "not allowed with argument" in capsys.readouterr().err and not (tmp_path / "both").exists()


def test_card_names_the_metadata_latencies_in_words() -> None:
    from zoo import create_model
    from zoo.model_card import describe_latency_key, render_card

    assert describe_latency_key("cpu_onnxruntime_b1_pred") == ("CPU", "ONNX Runtime", 1, True)
    assert describe_latency_key("gpu_h200_torch_b8_pred") == ("NVIDIA H200", "PyTorch", 8, True)
    assert describe_latency_key("mobile_pixel1_pred") == ("Pixel 1", "", None, True)
    info = create_model("fmnist_proxyless_cpu").info
    card = render_card(info, repo_id=REPO, weights_sha256="0" * 64)
    measured = info.metrics["latency_ms"]["cpu_onnxruntime_b1"]
    assert f"| CPU / ONNX Runtime | 1 | {measured:.3g} | measured when bundled" in card
    latency = card[card.index("## Latency") : card.index("## How it was searched")]
    assert not any(key in latency for key in info.metrics["latency_ms"]), "a raw metadata key in the card"
    # the bundled cpu net comes from the specialization protocol: the card tells how, with its seeds and intervals
    how = card[card.index("## How it was searched") : card.index("## Usage")]
    assert "**Specialized from an elastic supernet:**" in how and "**Search:**" not in how
    assert "- bundled_seed: " in how and "- test_top1_mean_ci: " in how
    base = create_model("fmnist_mobilenetv2").info  # seeds of its own recipe (docs/finetune.md, step 7): shown too
    seeded = dataclasses.replace(base, metrics={**base.metrics, "protocol": {"seeds": [0, 1], "bundled_seed": 1}})
    card = render_card(seeded, repo_id=REPO, weights_sha256="0" * 64)
    how = card[card.index("## How it was searched") : card.index("## Usage")]
    assert "**Search:**" in how and "**Evaluation protocol:**" in how and "- bundled_seed: 1" in how
