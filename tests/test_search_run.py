"""Search runs end to end on tiny synthetic data: resume after SIGKILL, two-process gloo, warm-up sharing, RL."""

import argparse
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from search.cli import main
from search.gradient.cli import add_parsers, run_config, warmup_config
from search.gradient.config import SearchConfig, run_argv
from search.gradient.objective import LatencyObjective
from search.gradient.reinforce import Reinforce, reward
from search.training.distributed import mix_seed

ROOT = Path(__file__).resolve().parents[1]
# One-epoch searches: alpha steps from the first search epoch on (the authors skip it: --arch-skip-epochs 1).
TINY = [
    "--space", "fmnist", "--dataset", "synthetic", "--target", "flops", "--target-latency", "15",
    "--batch-size", "4", "--val-size", "16", "--val-batch-size", "4", "--limit-train", "16",
    "--arch-every", "2", "--no-tensorboard", "--no-progress", "--seed", "3", "--arch-skip-epochs", "0",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _ckpt(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)


def _run(capsys, *args: str) -> dict:
    assert main(["run", *TINY, *args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_resume_after_sigkill_ends_like_an_uninterrupted_run(tmp_path, capsys):
    killed = tmp_path / "killed"
    schedule = ["--epochs", "2", "--warmup-epochs", "1", "--arch-skip-epochs", "1"]  # the authors' schedule
    cmd = [sys.executable, "-m", "search", "run", *TINY, *schedule]
    proc = subprocess.Popen([*cmd, "--ckpt-every", "1", "--out", str(killed)], env=ENV, cwd=ROOT)
    state = {}

    def kill_after_first_checkpoint() -> None:
        while proc.poll() is None and not (killed / "checkpoint.pt").exists():
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        state["finished_before_kill"] = (killed / "arch.json").exists()

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    full = _run(capsys, *schedule, "--out", str(tmp_path / "full"))
    killer.join(timeout=120)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not state["finished_before_kill"]
    steps_at_kill = _ckpt(killed)["counters"]["step"]
    assert 1 <= steps_at_kill < full["steps"]

    resumed = _run(capsys, *schedule, "--out", str(killed), "--resume")
    assert resumed["arch"] == full["arch"]
    a, b = _ckpt(tmp_path / "full"), _ckpt(killed)
    assert b["done"] and b["counters"] == a["counters"]
    assert torch.equal(a["model"]["alpha"], b["model"]["alpha"])
    assert not torch.allclose(a["model"]["alpha"], torch.zeros_like(a["model"]["alpha"]), atol=1e-3)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [e["argmax"] for e in a["history"]] == [e["argmax"] for e in b["history"]]
    arch = json.loads((killed / "arch.json").read_text())
    assert arch["format"] == "proxyless-arch/1" and arch["extra"]["search"]["predicted_latency"] > 0
    assert (killed / "alpha_evolution.png").stat().st_size > 1000
    assert len(json.loads((killed / "history.json").read_text())) == 3


_RANK_SCRIPT = """
import json, sys, torch, torch.distributed as dist
from search.cli import build_parser
from search.gradient.search import Search
from search.gradient.cli import run_config
args = build_parser().parse_args(sys.argv[1:])
s = Search(run_config(args))
print(json.dumps(s.run()))
torch.save({"model": s.net.state_dict()}, f"{args.out}/rank{dist.get_rank()}.pt")
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_keeps_alpha_identical(tmp_path):
    out = tmp_path / "ddp"
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    args = [*TINY, "--epochs", "1", "--warmup-epochs", "0", "--grad-mode", "two", "--out", str(out)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RANK_SCRIPT, "run", *args],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=150) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert torch.equal(r0["model"]["alpha"], r1["model"]["alpha"])
    assert all(torch.equal(r0["model"][k], r1["model"][k]) for k in r0["model"])  # weights and BN stats too
    assert not torch.allclose(r0["model"]["alpha"], torch.zeros(1), atol=1e-3)  # alpha did move
    assert (out / "arch.json").exists()
    r0, r1 = (json.loads(o[0].strip().splitlines()[-1]) for o in outs)
    assert r0["arch"] == r1["arch"] and r0["steps"] == 4  # 16 images / global batch 4


def test_shared_warmup_then_rl_search(tmp_path, capsys):
    warm = tmp_path / "warm"
    data = ["--space", "fmnist", "--dataset", "synthetic", "--batch-size", "4", "--val-size", "16"]
    opts = ["--limit-train", "16", "--no-tensorboard", "--no-progress", "--seed", "3"]
    assert main(["warmup", *data, *opts, "--epochs", "1", "--out", str(warm)]) == 0
    capsys.readouterr()
    assert _ckpt(warm)["done"] and not (warm / "arch.json").exists()
    rl = ["--algo", "rl", "--rl-samples", "3", "--val-batch-size", "16"]
    init = ["--epochs", "1", "--warmup-epochs", "5", "--init-from", str(warm / "checkpoint.pt")]
    res = _run(capsys, *rl, *init, "--out", str(tmp_path / "rl"))
    assert res["epochs"] == 1  # --init-from skipped the 5 warm-up epochs
    history = json.loads((tmp_path / "rl" / "history.json").read_text())
    assert history[0]["phase"] == "search" and history[0]["rl_reward"] > 0
    ckpt = _ckpt(tmp_path / "rl")
    assert ckpt["rl_baseline"] > 0
    init = torch.randn(ckpt["model"]["alpha"].shape, generator=torch.Generator().manual_seed(mix_seed(3, 1))) * 1e-3
    assert (ckpt["model"]["alpha"] - init).abs().max() > 5e-4  # the policy-gradient steps moved alpha
    warm_w = _ckpt(warm)["model"]["first_conv.conv.weight"]
    assert not torch.equal(ckpt["model"]["first_conv.conv.weight"], warm_w)  # trained on from the warm-up
    # the derived arch records a command that parses back to the same settings
    search = json.loads((tmp_path / "rl" / "arch.json").read_text())["extra"]["search"]
    argv = shlex.split(search["command"])
    assert argv[:3] == ["proxyless", "search", "run"]
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    args = parser.parse_args(["run", *argv[3:]])
    assert args.out == str(tmp_path / "rl")
    again = asdict(run_config(args))
    assert {k: again[k] for k in search["config"]} == search["config"]
    # ... and the warm-up it started from, as the command that reruns that warm-up
    argv = shlex.split(search["warmup_command"])
    assert argv[:3] == ["proxyless", "search", "warmup"]
    assert _ckpt(tmp_path / "rl")["warmup_command"] == search["warmup_command"]  # kept for a resumed run
    args = parser.parse_args(["warmup", *argv[3:]])
    assert args.out == str(warm) and args.epochs == 1
    again = asdict(warmup_config(args))
    ours = {k: v for k, v in _ckpt(warm)["config"].items() if k not in ("out", "tensorboard", "progress")}
    assert {k: again[k] for k in ours} == ours


def test_recorded_cpu_search_config_renders_to_a_command_that_parses_back():
    config = json.loads((ROOT / "benchmarks/results/fmnist_search_cpu/cpu/arch.json").read_text())["extra"]["search"]
    config = config["config"]
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    again = asdict(run_config(parser.parse_args(["run", *run_argv(config), "--out", "x"])))
    assert {k: again[k] for k in config} == config


def test_run_and_warmup_options_are_their_config_fields_with_its_defaults():
    """The options come from SearchConfig (zoo.options): a field without help would silently lose its flag; the
    warm-up's come from WARMUP_FIELDS, which warmup_command also reruns a warm-up with."""
    subparsers = argparse.ArgumentParser().add_subparsers()
    add_parsers(subparsers)

    def dests(name: str) -> set[str]:
        return {a.dest for a in subparsers.choices[name]._actions} - {"help"}

    assert dests("run") == {f.name for f in fields(SearchConfig)}
    assert dests("warmup") == {  # the options `search warmup` has always taken: WARMUP_FIELDS + out + epochs
        "out", "epochs", "space", "dataset", "data_dir", "batch_size", "val_size", "limit_train", "warmup_lr",
        "momentum", "weight_decay", "label_smoothing", "seed", "device", "amp", "channels_last", "init_elastic",
        "ckpt_every", "resume", "tensorboard", "progress",
    }  # fmt: skip
    run = subparsers.choices["run"].parse_args(["--out", "x", "--target-latency", "1"])
    assert run_config(run) == SearchConfig(out="x", target_latency=1.0)
    warm = warmup_config(subparsers.choices["warmup"].parse_args(["--out", "x"]))
    assert warm == SearchConfig(out="x", algo=None, target=None, epochs=0)
    with pytest.raises(SystemExit):  # --target-latency stays required for a search
        subparsers.choices["run"].parse_args(["--out", "x"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "{tmp}/x", "--resume"], "no checkpoint"),
        (["--out", "{tmp}/x", "--loss", "mul#log", "--target-latency", "0.5"], "use --loss mul#ratio"),
        (["--out", "{tmp}/x", "--init-from", "{tmp}/missing.pt"], "cannot read checkpoint"),
    ],
)
def test_bad_runs_exit_2_with_one_line(tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["run", *TINY, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("acc", "lat", "target", "w"), [(0.8, 12.0, 10.0, 0.07), (0.5, 6.0, 10.0, 0.1), (0.9, 10.0, 10.0, 0.3)]
)
def test_reinforce_reward_is_acc_times_latency_ratio_to_the_w(acc, lat, target, w):
    """ProxylessNAS-R / MnasNet: ACC * (LAT / T) ** w' with w' = -w < 0, i.e. ACC * (T / LAT) ** w here."""
    want = acc * (lat / target) ** (-w)
    assert reward(acc, lat, target, w) == pytest.approx(want, rel=1e-12)
    assert (reward(acc, lat, target, w) < acc) is (lat > target)  # over target costs, under target pays


def test_reinforce_loss_baseline_and_gradient_follow_the_formulas():
    """b <- decay b + (1 - decay) mean R (the first step: b = mean R); loss = -mean_m (R_m - b) log p(path_m);
    its gradient on alpha is mean_m (R_m - b) (p - onehot(path_m)) per layer, 0 on padded (invalid) columns."""
    table, fixed, target, w, decay = [[4.0, 2.0, 0.5], [3.0, 1.0, 0.0]], 1.5, 5.0, 0.2, 0.8
    objective = LatencyObjective(torch.tensor(table), fixed, target, "add#linear")
    alpha = torch.nn.Parameter(torch.tensor([[0.3, -0.2, 0.1], [0.5, -0.4, 7.0]]))
    valid = torch.tensor([[True, True, True], [True, True, False]])  # layer 1 has two candidates
    net = SimpleNamespace(alpha=alpha, valid=valid)
    rl = Reinforce(samples=3, tradeoff=w, baseline_decay=decay)

    def by_hand(paths, accs, baseline):
        lats = [fixed + sum(table[layer][j] for layer, j in enumerate(path)) for path in paths]
        rewards = [a * (target / lat) ** w for a, lat in zip(accs, lats, strict=True)]
        mean = sum(rewards) / len(rewards)
        b = mean if baseline is None else decay * baseline + (1 - decay) * mean
        e = [
            [math.exp(v) if ok else 0.0 for v, ok in zip(row, oks, strict=True)]
            for row, oks in zip(alpha.tolist(), valid.tolist(), strict=True)
        ]
        p = [[v / sum(row) for v in row] for row in e]
        loss = -sum(
            (r - b) * sum(math.log(p[layer][j]) for layer, j in enumerate(path))
            for r, path in zip(rewards, paths, strict=True)
        )
        grad = [[sum((r - b) * (p[i][c] - (path[i] == c)) for r, path in zip(rewards, paths, strict=True)) / len(paths)
                 for c in range(3)] for i in range(2)]  # fmt: skip
        return b, loss / len(paths), grad, mean, lats

    baseline = None
    for paths, accs in [([[0, 1], [2, 0], [1, 1]], [0.5, 0.75, 0.25]), ([[1, 0], [0, 0], [2, 1]], [1.0, 0.0, 0.5])]:
        b, want_loss, want_grad, mean, lats = by_hand(paths, accs, baseline)
        alpha.grad = None
        loss, stats = rl.loss(net, paths, accs, objective)
        loss.backward()
        assert rl.baseline == pytest.approx(b, rel=1e-12) and stats["baseline"] == pytest.approx(b, rel=1e-12)
        assert stats["reward"] == pytest.approx(mean) and stats["lat"] == pytest.approx(sum(lats) / 3)
        assert stats["acc"] == pytest.approx(sum(accs) / 3)
        assert loss.item() == pytest.approx(want_loss, rel=1e-5, abs=1e-7)
        assert alpha.grad.tolist() == [[pytest.approx(g, abs=1e-6) for g in row] for row in want_grad]
        assert alpha.grad[1, 2] == 0
        baseline = b


def test_a_search_checkpoint_with_a_flipped_byte_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    command = ["run", *TINY, "--epochs", "1", "--warmup-epochs", "1", "--out", str(out)]
    assert main(command) == 0
    ckpt = out / "checkpoint.pt"
    assert (out / "checkpoint.pt.sha256").is_file()
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 1
    ckpt.write_bytes(bytes(data))
    capsys.readouterr()
    assert main([*command, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {ckpt}: sha256 ") and "does not match" in err and len(err.splitlines()) == 1, err
