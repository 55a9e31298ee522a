"""scripts/fmnist_pipeline.py and scripts/bundle_fmnist.py without trainings: when a run counts as trained, how
jobs are stopped, the exit code, what is bundled with which note, what is packed, and bad bundle inputs."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).parents[1]
SLEEPER = "import signal, sys, time; signal.signal(signal.SIGTERM, {}); print('up', flush=True); time.sleep(60)"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pipe() -> ModuleType:
    return _script("fmnist_pipeline")


def _pipeline(pipe: ModuleType, out: Path, *args: str):
    return pipe.Pipeline(pipe.build_parser().parse_args(["--out", str(out), "--device", "cpu", *args]))


def test_a_failed_stage_makes_the_pipeline_exit_1(pipe: ModuleType, tmp_path: Path) -> None:
    assert pipe.main(["--out", str(tmp_path), "--device", "cpu", "--targets", "cpu,nope"]) == 1
    status = json.loads((tmp_path / "status.json").read_text())
    assert "unknown targets ['nope']" in status["error"] and status["failed"] == []


def test_a_job_past_its_deadline_gets_sigterm_and_may_checkpoint(pipe: ModuleType, tmp_path: Path) -> None:
    p = _pipeline(pipe, tmp_path)
    p.start("job", "-c", SLEEPER.format("lambda *_: sys.exit(0)"))  # exits 0 on SIGTERM, as a training does
    deadline = time.monotonic() + 60
    while "up" not in (tmp_path / "logs" / "job.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.wait("job", deadline=p.elapsed() + 1) is True
    assert p.status["job"] == "stopped at the deadline: exit 0 after SIGTERM" and p.failed == []


def test_the_last_training_left_running_is_resumed_on_every_core(
    pipe: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = {"quick": "import time; time.sleep(0.3)", "slow": SLEEPER.format("lambda *_: sys.exit(0)")}
    started: list[str] = []

    def fake_train_cmd(_p: object, arch: str, _out: Path) -> list[str]:  # "arch" names the fake job
        started.append(arch)
        again = "import os; print('threads', os.environ['OMP_NUM_THREADS'])"
        return ["-c", first[arch] if started.count(arch) == 1 else again]

    monkeypatch.setattr(pipe, "train_cmd", fake_train_cmd)
    monkeypatch.setattr(pipe.os, "cpu_count", lambda: 4)
    p = _pipeline(pipe, tmp_path, "--threads", "1")
    for name in ("quick", "slow"):
        p.train(name, name, tmp_path / name)
    pipe.finish_trainings(p, deadline=p.elapsed() + 600, poll_s=0.05)
    assert started == ["quick", "slow", "slow"]
    assert p.status == {**p.status, "quick": 0, "slow": 0} and p.failed == []
    assert "slow: the other jobs are done; resuming it on 4 threads" in (tmp_path / "pipeline.log").read_text()
    assert (tmp_path / "logs" / "slow.log").read_text().splitlines()[-1] == "threads 4"


def test_a_finished_training_drops_its_checkpoint_an_unfinished_one_keeps_it(
    pipe: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipe, "train_cmd", lambda _p, arch, _out: ["-c", "pass"])
    p = _pipeline(pipe, tmp_path)
    for name in ("finished", "stopped"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "checkpoint.pt").write_bytes(b"state")
        p.train(name, name, tmp_path / name)
    (tmp_path / "finished" / "metrics.json").write_text("{}")
    assert p.wait("finished") and p.wait("stopped")
    assert not (tmp_path / "finished" / "checkpoint.pt").exists()
    assert (tmp_path / "stopped" / "checkpoint.pt").read_bytes() == b"state"


def test_near_the_deadline_the_last_training_is_stopped_not_restarted(
    pipe: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = {"quick": "pass", "slow": SLEEPER.format("lambda *_: sys.exit(0)")}
    monkeypatch.setattr(pipe, "train_cmd", lambda _p, arch, _out: ["-c", jobs[arch]])
    monkeypatch.setattr(pipe.os, "cpu_count", lambda: 4)
    p = _pipeline(pipe, tmp_path, "--threads", "1")
    for name in jobs:
        p.train(name, name, tmp_path / name)
    pipe.finish_trainings(p, deadline=p.elapsed() + 3, poll_s=0.05)
    assert p.status["slow"] == "stopped at the deadline: exit 0 after SIGTERM"
    assert "resuming" not in (tmp_path / "pipeline.log").read_text()


def test_stop_kills_a_job_that_ignores_sigterm_after_the_grace_and_reaps_it(pipe: ModuleType) -> None:
    stubborn = subprocess.Popen([sys.executable, "-c", SLEEPER.format("signal.SIG_IGN")], stdout=subprocess.PIPE)
    assert stubborn.stdout.readline().strip() == b"up"
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    assert pipe.stop({"stubborn": stubborn, "finished": finished}, grace=1) == {"stubborn": "killed 1 s after SIGTERM"}
    assert stubborn.returncode == -signal.SIGKILL
    stubborn.stdout.close()


def _run_dir(path: Path, **config: object) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.safetensors").write_bytes(b"")  # written first: not yet a finished run
    recipe = {"epochs": 15, "batch_size": 128, "warmup_epochs": 1.0, "device": "cpu", **config}
    (path / "log.json").write_text(json.dumps({"config": recipe, "epochs": []}))


def test_bundle_takes_the_baseline_and_the_requested_targets_with_their_recorded_recipe(
    pipe: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _pipeline(pipe, tmp_path / "out", "--smoke", "--train-epochs", "99")
    train, search = tmp_path / "train", tmp_path / "search"
    nets = ["fmnist_mobilenetv2", "fmnist_proxyless_cpu", "fmnist_proxyless_mobile"]
    for name in nets:
        _run_dir(train / name)
    calls: list[tuple[str, tuple[str, ...]]] = []
    monkeypatch.setattr(p, "run", lambda name, *cmd, deadline=None: calls.append((name, cmd)) or True)
    pipe.bundle(p, train, search, ["cpu", "mobile"])
    assert calls == []  # no metrics.json yet
    for name in nets:
        (train / name / "metrics.json").write_text("{}")
    pipe.bundle(p, train, search, ["cpu", "mobile"])  # no fmnist_proxyless_gpu asked for: none waited for
    assert [name for name, _ in calls] == [*(f"bundle_{n}" for n in nets), "specialization"]
    note = calls[0][1][calls[0][1].index("--note") + 1]
    assert note.startswith("one recipe for all 3 nets (their log.json): epochs=15, batch_size=128")
    assert "epochs=99" not in note and "device=cpu" in note

    calls.clear()
    _run_dir(train / "fmnist_proxyless_mobile", epochs=10, warmup_epochs=2.0)
    pipe.bundle(p, train, search, ["cpu", "mobile"])
    note = calls[0][1][calls[0][1].index("--note") + 1]
    assert note.startswith(
        "the nets' recipes differ (their log.json): fmnist_mobilenetv2: epochs=15, warmup_epochs=1.0"
    )
    assert "fmnist_proxyless_mobile: epochs=10, warmup_epochs=2.0; the same for all: batch_size=128" in note

    monkeypatch.setattr(p, "run", lambda name, *cmd, deadline=None: name != "specialization")
    with pytest.raises(ValueError, match="specialization table failed"):
        pipe.bundle(p, train, search, ["cpu", "mobile"])


def test_pack_keeps_training_checkpoints_and_the_warmup_until_every_search_is_done(
    pipe: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUT", raising=False)
    out = tmp_path / "search" / "fmnist"  # a folder named search above OUT must not count
    p = _pipeline(pipe, out, "--targets", "cpu,mobile")
    for run in ("search/warmup", "search/cpu", "search/mobile", "train/fmnist_proxyless_cpu"):
        (out / run).mkdir(parents=True)
        (out / run / "checkpoint.pt").write_bytes(b"x")
    (out / "search" / "cpu" / "arch.json").write_text("{}")

    def left() -> list[str]:
        return sorted(str(c.relative_to(out)) for c in out.rglob("checkpoint.pt"))

    pipe.pack(p)  # the mobile search has not finished: it restarts from the warm-up
    assert left() == ["search/warmup/checkpoint.pt", "train/fmnist_proxyless_cpu/checkpoint.pt"]
    with tarfile.open(f"{out}.tar.gz") as tar:
        assert "fmnist/train/fmnist_proxyless_cpu/checkpoint.pt" in tar.getnames()
    (out / "search" / "mobile" / "arch.json").write_text("{}")
    pipe.pack(p)
    assert left() == ["train/fmnist_proxyless_cpu/checkpoint.pt"]


def test_bundle_script_refuses_bad_input_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    b = _script("bundle_fmnist")
    monkeypatch.chdir(tmp_path)  # relative paths: resolved here, not in the repo root the commands run from
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"")
    (tmp_path / "search").mkdir()
    cases = [
        (["run"], f"error: {run} is not a finished training run: no config.json there"),
        (["run", "--search-run", "search"], f"error: --search-run {tmp_path / 'search'}: no arch.json there"),
        (["run", "--search-run", "search"], f"error: {tmp_path / 'search' / 'arch.json'}: not valid JSON"),
        (["run", "--metrics-from", "extra.json"], f"error: --metrics-from {tmp_path / 'extra.json'}: [Errno 2]"),
        (
            ["run", "--metrics-from", "extra.json"],
            f"error: --metrics-from {tmp_path / 'extra.json'}: not a JSON object",
        ),
        (["run"], "error: "),  # weights that do not load: still one line
    ]
    for i, (args, message) in enumerate(cases):
        if i == 1:
            (run / "config.json").write_text("{}")
        if i == 2:
            (tmp_path / "search" / "arch.json").write_text("{")
        if i == 4:
            (tmp_path / "extra.json").write_text("[1]")
        monkeypatch.setattr(sys, "argv", ["bundle_fmnist.py", "net", *args])
        assert b.main() == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and len(err.splitlines()) == 1, err
    assert not (ROOT / "zoo" / "pretrained" / "net").exists()


def test_bundle_merges_metrics_from_a_file_over_the_runs_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Step 7 of docs/finetune.md bundles a run with its seeds record and its arch's provenance this way; the
    measuring commands are stood in for (their own tests run them)."""
    from zoo.registry import build_network, spec_from_dict
    from zoo.weights import read_config, save_pretrained

    b = _script("bundle_fmnist")
    spec = spec_from_dict({"format": "proxyless-arch/1", "name": "t", "blocks": ["mb1_k3_s1_c8"], "in_chans": 1})
    meta = {"dataset": "fashion-mnist", "input_size": [1, 28, 28], "mean": [0.3], "std": [0.4], "source": "trained"}
    meta |= {"categories": [str(i) for i in range(10)], "metrics": {"top1": 0.5, "source": "val"}}
    save_pretrained(build_network(spec), tmp_path / "run", meta)

    def measured(*cmd: str) -> dict:
        if "bench" in cmd:
            report = Path(cmd[cmd.index("--out") + 1]) / "report.json"
            report.parent.mkdir(parents=True)
            rows = [{"runtime": r, "p50_ms": 0.5} for r in ("torch", "onnxruntime")]
            report.write_text(json.dumps({"results": rows}))
        return {"top1": 0.9, "top5": 0.99, "n": 10000, "total": 1.0}

    monkeypatch.setattr(b, "last_json", measured)
    extra = {"protocol": {"seeds": [0, 1], "bundled_seed": 0}, "specialized": {"subnet": "d2331"}, "top5": 0.5}
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    args = ["run", "--metrics-from", "extra.json", "--dest", "out"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bundle_fmnist.py", "net", *args])
    assert b.main() == 0, capsys.readouterr().err
    metrics = read_config(tmp_path / "out")["metadata"]["metrics"]
    assert metrics["protocol"] == extra["protocol"] and metrics["specialized"] == extra["specialized"]
    assert metrics["top5"] == 0.5 and metrics["top1"] == 0.9  # the file's word is the last
    assert metrics["latency_ms"]["cpu_onnxruntime_b1"] == 0.5


def test_last_json_says_which_command_printed_no_json_line() -> None:
    b = _script("bundle_fmnist")
    assert b.last_json("-c", "print('working'); print('{\"a\": 1}')") == {"a": 1}
    for code, last in (("pass", "''"), ("print('done')", "'done'"), ("print(5)", "'5'")):
        with pytest.raises(SystemExit, match=f"did not end with a JSON object line \\(its last line: {last}\\)"):
            b.last_json("-c", code)


def test_bundled_search_record_gets_both_commands_and_no_checkout_path(tmp_path: Path) -> None:
    import torch

    from search.gradient.config import SearchConfig

    b = _script("bundle_fmnist")
    warm = tmp_path / "warmup" / "checkpoint.pt"
    warm.parent.mkdir()
    torch.save({"config": asdict(SearchConfig(out=str(warm.parent), warmup_epochs=2, limit_train=16))}, warm)
    config = {"space": "fmnist", "epochs": 3, "init_from": str(warm)}
    record = b.with_commands({"config": config, "init_from": str(warm)}, tmp_path / "cpu")
    run = f"proxyless search run --space fmnist --epochs 3 --init-from {warm} --out {tmp_path}/cpu"
    assert record["command"] == run
    assert record["warmup_command"].startswith("proxyless search warmup --space fmnist --dataset fashion-mnist")
    assert "--limit-train 16 " in record["warmup_command"] and "--init-from" not in record["warmup_command"]
    assert record["warmup_command"].endswith(f"--epochs 2 --out {warm.parent}")
    inside = {"a": [f"{b.ROOT}/runs/x", 3, "/elsewhere/y"], "b": f"cd {b.ROOT}/runs && ls"}
    assert b.repo_relative(inside) == {"a": ["runs/x", 3, "/elsewhere/y"], "b": "cd runs && ls"}


def test_archs_from_copies_the_searched_archs_and_refuses_a_missing_or_different_one(
    pipe: ModuleType, tmp_path: Path
) -> None:
    committed = ROOT / "benchmarks" / "results" / "fmnist_search_cpu_1x"
    search = tmp_path / "search"
    pipe.take_archs(committed, search, ["cpu", "mobile", "gpu"])
    for t in ("cpu", "mobile", "gpu"):
        assert (search / t / "arch.json").read_bytes() == (committed / t / "arch.json").read_bytes()
    pipe.take_archs(committed, search, ["cpu"])  # again: the same file is fine
    with pytest.raises(ValueError, match=r"no cpu_tight/arch\.json there"):
        pipe.take_archs(committed, search, ["cpu_tight"])
    (search / "gpu" / "arch.json").write_text("{}")
    with pytest.raises(ValueError, match="differs from"):
        pipe.take_archs(committed, search, ["gpu"])
    assert (search / "gpu" / "arch.json").read_text() == "{}"


def test_every_archs_from_dir_the_makefile_names_holds_the_three_searched_archs(
    pipe: ModuleType, tmp_path: Path
) -> None:
    dirs = set(re.findall(r"--archs-from (\S+)", (ROOT / "Makefile").read_text()))
    assert dirs, "the Makefile names no --archs-from directory"
    for d in sorted(dirs):
        search = tmp_path / Path(d).name
        pipe.take_archs(ROOT / d, search, ["cpu", "mobile", "gpu"])
        for t in ("cpu", "mobile", "gpu"):
            record = json.loads((search / t / "arch.json").read_text())["extra"]["search"]
            assert record["target"] == t and record["predicted_latency"] <= record["target_latency"]


def test_factor_sets_the_trained_targets_and_search_only_trains_nothing(pipe: ModuleType, tmp_path: Path) -> None:
    committed = ROOT / "benchmarks" / "results" / "fmnist_search_cpu_long"
    (tmp_path / "search" / "warmup").mkdir(parents=True)
    (tmp_path / "search" / "warmup" / ".done").touch()
    pipe.take_archs(committed, tmp_path / "search", ["cpu", "mobile", "gpu"])  # searched: nothing left to search
    run = ["--out", str(tmp_path), "--device", "cpu", "--targets", "cpu,mobile,gpu", "--search-only"]
    assert pipe.main([*run, "--factor", "1.0"]) == 0
    targets = json.loads((tmp_path / "targets.json").read_text())
    assert sorted(targets) == ["cpu", "gpu", "mobile"]
    for t in targets.values():
        assert t["factor"] == 1.0 and t["target_ms"] == pytest.approx(t["baseline_ms"], abs=1e-4)
    assert targets["mobile"]["baseline_ms"] > targets["cpu"]["baseline_ms"] > 0  # the Pixel-1 is the slow one
    assert not [log.name for log in (tmp_path / "logs").iterdir() if log.name.startswith(("train_", "warmup"))]
    # the same folder with another factor: the searches there were run for the old targets
    assert pipe.main([*run, "--factor", "0.8"]) == 1
    error = json.loads((tmp_path / "status.json").read_text())["error"]
    assert "cpu, mobile, gpu searched before with other targets" in error
    assert json.loads((tmp_path / "targets.json").read_text()) == targets


def test_factor_leaves_the_tight_and_loose_searches_and_refuses_bad_values(pipe: ModuleType, tmp_path: Path) -> None:
    args = pipe.build_parser().parse_args(["--factor", "1.0"])
    assert [pipe.factor_of(args, t) for t in ("cpu", "mobile", "gpu", "cpu_tight", "cpu_loose")] == [1, 1, 1, 0.5, 1.2]
    assert pipe.factor_of(pipe.build_parser().parse_args([]), "gpu") == pipe.TARGET_FACTORS["gpu"]
    for bad in ("0", "-1", "nan"):
        with pytest.raises(SystemExit):
            pipe.build_parser().parse_args(["--factor", bad])
    assert pipe.main(["--out", str(tmp_path), "--device", "cpu", "--search-only", "--archs-from", "x"]) == 1
    assert "--search-only with --archs-from" in json.loads((tmp_path / "status.json").read_text())["error"]
