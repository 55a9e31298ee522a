"""Training: a run stopped mid-epoch and resumed ends with the same weights; the result loads and evaluates."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from search.cli import main as search_main
from search.training.train import TrainConfig, TrainError, train
from zoo import create_model
from zoo.arch import ArchSpec
from zoo.cli import main as zoo_main
from zoo.datasets import FMNIST_DEFAULT_DIR, balanced_subset, load_arrays
from zoo.evaluate import load_for_eval
from zoo.network import ProxylessNet
from zoo.weights import read_config

TINY = {
    "format": "proxyless-arch/1",
    "name": "tiny",
    "blocks": ["mb1_k3_s1_c8", "mb3_k3_s2_c16", "mb3_k3_s1_c16_res"],
    "stem_channels": 8,
    "stem_stride": 1,
    "feature_mix": 32,
    "in_chans": 1,
    "input_size": 28,
    "num_classes": 10,
}
# 30 steps per epoch on the synthetic set; lr high and warm-up short so 2 epochs learn it
ARGS = ["--dataset", "synthetic", "--epochs", "2", "--batch-size", "32", "--limit-train", "960", "--lr", "1.6"]
ARGS += ["--warmup-epochs", "0.5", "--no-progress"]


@pytest.fixture(scope="module")
def arch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def straight(arch: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "straight"
    assert search_main(["train", "--arch", str(arch), "--out", str(out), *ARGS]) == 0
    return out


def _config(arch: Path, out: Path, **kw) -> TrainConfig:
    base = TrainConfig(arch=str(arch), out=str(out), dataset="synthetic", epochs=2, batch_size=32, limit_train=960)
    return replace(base, lr=1.6, warmup_epochs=0.5, progress=False, **kw)


def _rows(out: Path) -> list[dict]:
    rows = json.loads((out / "log.json").read_text())["epochs"]
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


def _by_hand(run: Path, dataset: str, limit: int | None = None) -> tuple[float, float, int]:
    """(top1, top5, n) of a run's saved weights on the test split (or its balanced ``limit`` subset), computed
    here: the network rebuilt from config.json, the raw tensors loaded as they are, the images normalized by hand."""
    config = read_config(run)
    model = ProxylessNet(ArchSpec.from_dict(config["arch"]))
    model.load_state_dict(load_file(run / "model.safetensors"))
    images, labels = load_arrays(dataset, "test")
    if limit is not None:
        idx = balanced_subset(labels, limit)
        assert torch.bincount(labels[idx], minlength=10).tolist() == [limit // 10] * 10  # balanced, as documented
        images, labels = images[idx], labels[idx]
    meta = config["metadata"]
    assert images.shape[1:] == (1, 28, 28)  # no resize to do
    x = (images.float() / 255 - meta["mean"][0]) / meta["std"][0]
    with torch.no_grad():
        top5 = model.eval()(x).topk(5, dim=1).indices
    hits1 = (top5[:, 0] == labels).sum().item()
    hits5 = (top5 == labels[:, None]).any(1).sum().item()
    return hits1 / len(labels), hits5 / len(labels), len(labels)


def test_stop_mid_epoch_and_resume_gives_identical_weights(arch: Path, straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    stopped = train(_config(arch, out, stop_after_steps=37))  # 7 steps into the second epoch
    assert stopped == {"finished": False, "epoch": 1, "step": 37, "checkpoint": str(out / "checkpoint.pt")}
    assert not (out / "model.safetensors").exists() and len(_rows(out)) == 1
    with pytest.raises(TrainError, match="pass --resume"):
        train(_config(arch, out))
    with pytest.raises(TrainError, match=r"lr=1\.0"):
        train(replace(_config(arch, out, resume=True), lr=1.0))
    result = train(_config(arch, out, resume=True))
    assert result["finished"] and result["n"] == 500
    assert read_config(out)["weights_sha256"] == read_config(straight)["weights_sha256"]
    assert _rows(out) == _rows(straight)
    assert (out / "log.csv").read_text().count("\n") == 3 and any((out / "tb").iterdir())


def test_trained_model_learns_and_loads(straight: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = json.loads((straight / "metrics.json").read_text())
    assert metrics["top1"] > 0.5  # chance is 0.1
    top1, top5, n = _by_hand(straight, "synthetic")
    assert n == 500 and metrics["top1"] == pytest.approx(top1, abs=1e-9) and metrics["top5"] == pytest.approx(top5)
    config = read_config(straight)
    assert config["metadata"]["metrics"]["top1"] == metrics["top1"]
    assert config["metadata"]["input_size"] == [1, 28, 28] and len(config["metadata"]["categories"]) == 10
    model, info = load_for_eval(str(straight))
    assert info.dataset == "synthetic" and model.spec.name == "tiny"
    monkeypatch.setenv("PROXYLESS_ZOO_EXTRA", str(straight))  # the registry picks up a run directory by name
    for pretrained in (True, str(straight)):
        loaded = create_model("straight", pretrained=pretrained)
        for k, v in loaded.state_dict().items():
            assert torch.equal(v, model.state_dict()[k]), k


def test_eval_cli_json_on_a_limited_subset(straight: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo_main(["eval", str(straight), "--limit", "60", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["n"] == 60 and record["dataset"] == "synthetic" and record["top1"] > 0.5
    top1, top5, _ = _by_hand(straight, "synthetic", 60)
    assert (record["top1"], record["top5"]) == (pytest.approx(top1, abs=1e-9), pytest.approx(top5, abs=1e-9))
    assert set(record) >= {"top1", "top5", "loss", "n", "limit", "subset_seed"}
    if not Path(FMNIST_DEFAULT_DIR).is_dir():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    assert zoo_main(["eval", str(straight), "--dataset", "fashion-mnist", "--limit", "50", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    top1, top5, n = _by_hand(straight, "fashion-mnist", 50)  # another dataset: a net of synthetic data, any score
    assert record["n"] == n == 50
    assert (record["top1"], record["top5"]) == (pytest.approx(top1, abs=1e-9), pytest.approx(top5, abs=1e-9))


def test_bad_inputs_give_one_line_errors(arch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert search_main(["train", "--arch", str(arch), "--out", str(tmp_path), "--dataset", "cifar10"]) == 2
    assert "arch has 1 input channels, cifar10 has 3" in capsys.readouterr().err
    assert search_main(["train", "--arch", str(arch), "--out", str(tmp_path), "--amp", "bf16"]) == 2
    assert "--amp needs --device cuda" in capsys.readouterr().err
    assert search_main(["train", "--arch", "uniform:fmnist:k4", "--out", str(tmp_path)]) == 2
    assert "uniform:SPACE:k<kernel>e<expand>" in capsys.readouterr().err
    assert zoo_main(["eval", str(tmp_path / "nothing"), "--limit", "5"]) == 2


def test_time_limit_stops_checkpointed_and_resumes_to_the_same_result(
    arch: Path, straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "limited"
    argv = ["train", "--arch", str(arch), "--out", str(out), *ARGS]
    assert search_main([*argv, "--time-limit", "1e-4"]) == 0  # 6 ms: past it after the first step or so
    stopped = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ckpt = out / "checkpoint.pt"
    assert stopped["finished"] is False and 1 <= stopped["step"] < 60 and stopped["checkpoint"] == str(ckpt), stopped
    assert ckpt.is_file() and not (out / "model.safetensors").exists() and not (out / "metrics.json").exists()
    assert torch.load(ckpt, weights_only=True)["step"] == stopped["step"]
    assert search_main([*argv, "--resume"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["finished"] and result["n"] == 500
    assert read_config(out)["weights_sha256"] == read_config(straight)["weights_sha256"]  # as if never stopped
    assert _rows(out) == _rows(straight)


def test_sigterm_stops_at_the_next_step_checkpointed(arch: Path, tmp_path: Path) -> None:
    """A scheduler's or a session's SIGTERM ends training like --time-limit: checkpointed, resumable."""
    out = tmp_path / "terminated"
    before = signal.getsignal(signal.SIGTERM)

    def terminate_once_handled() -> None:
        deadline = time.monotonic() + 60
        while signal.getsignal(signal.SIGTERM) is before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # a few steps in
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_handled, daemon=True).start()
    stopped = train(_config(arch, out, epochs=40))  # 1,200 steps: far more than 0.3 s
    assert stopped["finished"] is False and 0 < stopped["step"] < 1200, stopped
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    resumed = train(_config(arch, out, epochs=40, resume=True, stop_after_steps=3))
    assert resumed["step"] == stopped["step"] + 3


def test_resume_ignores_the_arch_name_and_extra_but_not_the_network(arch: Path, tmp_path: Path) -> None:
    """A re-finalized arch.json (new name, search record) still resumes; another network does not."""
    out = tmp_path / "run"
    assert train(_config(arch, out, stop_after_steps=5))["step"] == 5
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps({**TINY, "name": "tiny_final", "extra": {"search": {"epochs": 3}}}))
    assert train(_config(renamed, out, resume=True, stop_after_steps=3))["step"] == 8
    wider = tmp_path / "wider.json"
    wider.write_text(json.dumps({**TINY, "feature_mix": 64}))
    with pytest.raises(TrainError, match="another architecture"):
        train(_config(wider, out, resume=True))


def test_unreadable_checkpoints_are_one_line_errors(
    arch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    cases = [(b"", "cannot read checkpoint"), (b"not a checkpoint", "cannot read checkpoint")]
    torch.save({"format": "something/else"}, out / "other.pt")
    cases.append(((out / "other.pt").read_bytes(), "not a proxyless-train-checkpoint/1 checkpoint"))
    for content, message in cases:
        (out / "checkpoint.pt").write_bytes(content)
        assert search_main(["train", "--arch", str(arch), "--out", str(out), *ARGS, "--resume"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_missing_gpu_is_a_one_line_error(arch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["train", "--arch", str(arch), *ARGS], ["warmup", "--space", "fmnist", "--dataset", "synthetic"]):
        assert search_main([*command, "--out", str(tmp_path / "gpu"), "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == "error: --device cuda: torch sees no CUDA device on this machine", err


def test_a_full_folder_or_a_flipped_byte_is_one_line_and_the_last_good_checkpoint_stays(
    arch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    command = ["train", "--arch", str(arch), "--out", str(out), *ARGS]
    assert search_main([*command, "--stop-after-steps", "5"]) == 0
    ckpt = out / "checkpoint.pt"
    good = ckpt.read_bytes()
    assert (out / "checkpoint.pt.sha256").read_text().split()[0] == hashlib.sha256(good).hexdigest()
    capsys.readouterr()

    def disk_full(obj: object, f: Any) -> None:
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(torch, "save", disk_full)
        assert search_main([*command, "--resume", "--stop-after-steps", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: cannot write checkpoint.pt in {out}: No space left on device", err
    assert ckpt.read_bytes() == good and not [p for p in out.iterdir() if p.name.startswith(".")]
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 1
    ckpt.write_bytes(bytes(flipped))
    assert search_main([*command, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {ckpt}: sha256 ") and "does not match" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--lr", "nan", "--lr must be finite, got nan"),  # trained 60 epochs at loss nan, then "finished"
        ("--kd-weight", "inf", "--kd-weight must be finite, got inf"),
        ("--lr", "-0.1", "--lr must be > 0, got -0.1"),
        ("--warmup-epochs", "-1", "--warmup-epochs must be >= 0, got -1.0"),
        ("--momentum", "1", "--momentum must be in [0, 1), got 1.0"),
        ("--wd", "-1e-4", "--wd must be >= 0, got -0.0001"),
        ("--label-smoothing", "1", "--label-smoothing must be in [0, 1), got 1.0"),
        ("--kd-weight", "-1", "--kd-weight must be in (0, 100], got -1.0"),  # trained away from the teacher
        ("--checkpoint-minutes", "0", "--checkpoint-minutes must be > 0, got 0.0"),  # a checkpoint every step
        ("--time-limit", "0", "--time-limit must be > 0, got 0.0"),  # stopped after one step
    ],
)
def test_a_bad_optimizer_setting_is_one_line_before_any_data_is_read(
    flag: str, value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the data was read: the setting was not refused")

    monkeypatch.setattr("search.training.train.build_train_data", never)
    out = tmp_path / "run"
    args = ["train", "--arch", "uniform:fmnist:k3e6", "--dataset", "synthetic", "--out", str(out), f"{flag}={value}"]
    assert search_main(args) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not out.exists()
