"""The elastic route end to end on a tiny run: training (resume), predictor, specialize, and the CLI's refusals."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from search.cli import main as search_main
from search.elastic import specialize as specialize_module
from search.elastic.evolution import EvolutionConfig, SearchLimitError, crossover, evolve, random_search
from search.elastic.extract import parse_subnet
from search.elastic.latency import SubnetLatency
from search.elastic.predictor import encode, load_predictor
from search.elastic.shrinking import PHASES, phase_of, progressive_students
from search.elastic.space import get_elastic_space
from search.elastic.store import WEIGHTS, load_supernet
from search.elastic.train import ElasticTrainConfig, ElasticTrainer, train_supernet
from search.latency.predict import load_latency_model
from search.training.stats import bootstrap_tau, kendall_tau
from search.training.train import TrainError
from zoo import create_model
from zoo.arch import ArchSpec
from zoo.evaluate import evaluate
from zoo.files import write_checksummed
from zoo.registry import weights_dir_info
from zoo.weights import load_pretrained

FMNIST = get_elastic_space("fmnist")
TINY = {
    "space": "fmnist",
    "dataset": "synthetic",
    "epochs": 1,
    "batch_size": 32,
    "limit_train": 256,
    "val_size": 200,
    "calib_images": 64,
    "lr": 0.4,
    "warmup_epochs": 0.2,
    "progress": False,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("elastic") / "run"
    result = train_supernet(ElasticTrainConfig(out=str(out), state_dtype="float32", **TINY))
    assert result["finished"] and result["steps"] == 8
    return out


def test_training_writes_a_loadable_supernet_and_logs(trained: Path) -> None:
    _, config = load_supernet(trained)
    assert config["metadata"]["recipe"]["calib_images"] == 64
    rows = (trained / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,lr,loss_largest,loss_distill") and len(rows) == 2
    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0 <= metrics["val_top1_smallest"] <= 1 and "val_top1_baseline" in metrics


def test_resume_is_bit_identical(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    first = train_supernet(ElasticTrainConfig(out=str(out), state_dtype="float32", stop_after_steps=3, **TINY))
    assert first == {"finished": False, "epoch": 0, "step": 3, "checkpoint": str(out / "checkpoint.pt")}
    assert train_supernet(ElasticTrainConfig(out=str(out), state_dtype="float32", resume=True, **TINY))["finished"]
    a, b = load_file(trained / WEIGHTS), load_file(out / WEIGHTS)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_half_precision_checkpoint_resumes(tmp_path: Path) -> None:
    out = tmp_path / "half"
    train_supernet(ElasticTrainConfig(out=str(out), stop_after_steps=2, **TINY))
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in ck["ema"].values() if v.is_floating_point())
    assert next(iter(ck["model"].values())).dtype == torch.float32
    with pytest.raises(TrainError, match="lr"):
        train_supernet(ElasticTrainConfig(out=str(out), resume=True, **{**TINY, "lr": 0.1}))
    assert train_supernet(ElasticTrainConfig(out=str(out), resume=True, **TINY))["steps"] == 8


def test_progressive_shrinking_opens_kernel_then_depth_then_expand(tmp_path: Path) -> None:
    top, rng = FMNIST.largest(), random.Random(0)
    assert [phase_of(s, 8) for s in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3] and len(PHASES) == 4
    assert progressive_students(FMNIST, rng, 0, 3) == []
    opened = []
    for phase in (1, 2, 3):
        drawn = progressive_students(FMNIST, rng, phase, 50)
        assert len(drawn) == 50
        varied = {"depths"} if any(s.depths != top.depths for s in drawn) else set()
        for dim in ("kernels", "expands"):  # of the layers a subnet runs (skipped ones are normalized)
            if any(getattr(s, dim)[i] != getattr(top, dim)[i] for s in drawn for i in FMNIST.active(s)):
                varied.add(dim)
        opened.append(varied)
    assert opened == [{"kernels"}, {"kernels", "depths"}, {"kernels", "depths", "expands"}]
    trainer = ElasticTrainer(ElasticTrainConfig(out=str(tmp_path / "p"), schedule="progressive", **TINY))
    assert [len(trainer.subnets_of_step(s)) for s in range(8)] == [0, 0, 3, 3, 3, 3, 3, 3]
    again = ElasticTrainer(ElasticTrainConfig(out=str(tmp_path / "q"), schedule="progressive", **TINY))
    assert again.subnets_of_step(5) == trainer.subnets_of_step(5)  # seeded by (seed, step): a resume draws alike
    assert trainer.subnets_of_step(5) != trainer.subnets_of_step(6)


def test_a_sandwich_step_trains_the_largest_the_smallest_and_random_subnets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = ElasticTrainer(ElasticTrainConfig(out=str(tmp_path / "s"), **TINY))
    ran: list = []
    forward = trainer.model.forward
    monkeypatch.setattr(trainer.model, "forward", lambda x, subnet: ran.append(subnet) or forward(x, subnet))
    x, y = next(iter(trainer.loader))
    trainer._train_mode()
    trainer.train_step(x, y)
    assert ran[0] == FMNIST.largest() and FMNIST.smallest() in ran[1:]
    assert len(ran) == 2 + trainer.config.random_subnets


def test_crossover_children_are_normalized_and_take_each_gene_from_a_parent() -> None:
    rng = random.Random(0)
    for _ in range(200):
        a, b = FMNIST.sample(rng), FMNIST.sample(rng)
        child = crossover(FMNIST, a, b, rng)
        assert child == FMNIST.subnet(child.depths, child.kernels, child.expands)  # as the space writes it
        assert all(d in (u, v) for d, u, v in zip(child.depths, a.depths, b.depths, strict=True))
        for i in FMNIST.active(child):
            assert child.kernels[i] in (a.kernels[i], b.kernels[i], FMNIST.kernels[0])


def test_the_predictor_encoding_tells_every_kernel_and_expand_apart() -> None:
    """Subnets that run differently get different features: one one-hot kernel and one expand per layer run."""
    top = FMNIST.largest()
    n = len(top.kernels)
    variants = [top, *(FMNIST.uniform(k, e) for k in FMNIST.kernels for e in FMNIST.expands if (k, e) != (7, 6))]
    one_expand = FMNIST.subnet(top.depths, top.kernels, (*top.expands[:-1], min(FMNIST.expands)))
    features = encode(FMNIST, [*variants, one_expand])
    assert len({tuple(row.tolist()) for row in features}) == len(variants) + 1
    assert features.sum(1).tolist() == [2.0 * n] * (len(variants) + 1)  # one kernel and one expand per layer
    assert features.shape[1] == n * (len(FMNIST.kernels) + len(FMNIST.expands))


def test_schedule_is_a_resume_key_and_older_checkpoints_had_the_sandwich(tmp_path: Path) -> None:
    cfg = ElasticTrainConfig(out=str(tmp_path / "s"), stop_after_steps=2, **TINY)
    train_supernet(cfg)
    with pytest.raises(TrainError, match="schedule='progressive', but the run used 'sandwich'"):
        train_supernet(replace(cfg, resume=True, schedule="progressive"))
    path = tmp_path / "s" / "checkpoint.pt"
    ck = torch.load(path, weights_only=True)
    del ck["config"]["schedule"]  # as written before --schedule existed (the fmnist supernet's checkpoint)
    write_checksummed(path, lambda f: torch.save(ck, f))
    assert train_supernet(replace(cfg, resume=True, stop_after_steps=None))["steps"] == 8


def test_predictor_then_specialize_end_to_end(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert search_main(["elastic-predictor", "--supernet", str(trained), "--subnets", "12", "--no-progress"]) == 0
    fit = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert fit["train_subnets"] + fit["heldout_subnets"] == 12
    rows = (trained / "subnet_accuracy.csv").read_text().splitlines()[1:]
    assert len(rows) == 12
    # the reported RMSE is the saved predictor's error on some `heldout_subnets` of the 12 measured subnets
    predictor, _ = load_predictor(FMNIST, trained)
    subnets = [parse_subnet(FMNIST, row.split(",")[0]) for row in rows]
    with torch.no_grad():
        errors = (predictor(encode(FMNIST, subnets)) - torch.tensor([float(r.split(",")[1]) for r in rows])).tolist()
    rmses = [
        (sum(errors[i] ** 2 for i in held) / len(held)) ** 0.5
        for held in combinations(range(12), fit["heldout_subnets"])
    ]
    assert min(abs(r - fit["rmse"]) for r in rmses) < 1e-6 and fit["rmse"] > 0
    out = tmp_path / "fmnist_spec_cpu"
    args = ["specialize", "--supernet", str(trained), "--lut", "cpu", "--factor", "0.75", "--out", str(out)]
    assert search_main([*args, "--population", "8", "--generations", "3", "--top", "2"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["latency"] <= record["limit"] and record["search"] == "evolution"
    info = weights_dir_info(out)
    supernet, _ = load_supernet(trained)
    subnet = FMNIST.subnet_of(info.arch)
    assert str(subnet) == record["subnet"]
    cpu = load_latency_model("cpu", FMNIST.backbone)
    assert cpu.predict_arch(info.arch).total_ms == pytest.approx(record["latency"], abs=1e-3)
    baseline_ms = cpu.predict_arch(FMNIST.arch(FMNIST.baseline())).total_ms
    assert record["limit"] == pytest.approx(0.75 * baseline_ms, abs=1e-3)
    net = supernet.extract(subnet)
    load_pretrained(net, out)  # the folder's weights fit the arch; the sha256 matches
    model = create_model(str(out), pretrained=True).eval()
    assert model.info.name == "fmnist_spec_cpu" and model.info.dataset == "synthetic"
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), net.eval()(x))
    with pytest.raises(ValueError, match="not a weights folder"):
        create_model(str(tmp_path / "nothing_here"))
    spec = json.loads((out / "specialize.json").read_text())
    assert spec["supernet_sha256"] and spec["command"] is not None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target-ms", "-1"], "--target-ms must be a finite number > 0"),
        (["--target-ms", "0.01"], "below the smallest subnet"),
        (["--factor", "1", "--population", "2"], "--population must be between 4 and 100,000, got 2"),
    ],
)
def test_specialize_refuses_bad_input_in_one_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    args = ["specialize", "--supernet", str(trained), "--lut", "cpu", "--out", str(tmp_path / "x"), *extra]
    assert search_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_specialize_refuses_a_used_out_folder_and_a_missing_table(tmp_path: Path, capsys) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "f").write_text("x")
    assert search_main(["specialize", "--lut", "cpu", "--factor", "1", "--out", str(tmp_path / "used")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert search_main(["specialize", "--lut", "nope.json", "--factor", "1", "--out", str(tmp_path / "o")]) == 2
    assert "neither one of" in capsys.readouterr().err


def test_elastic_train_refuses_bad_input(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:  # argparse's refusal: usage line, then the error
        search_main(["elastic-train", "--out", str(tmp_path), "--state-dtype", "int8"])
    assert stop.value.code == 2 and "--state-dtype: invalid choice: 'int8'" in capsys.readouterr().err
    with pytest.raises(TrainError, match="random-subnets"):
        ElasticTrainConfig(out=str(tmp_path), random_subnets=-1).validate()
    with pytest.raises(TrainError, match=r"^--warmup-epochs must be >= 0, got -0\.5$"):
        ElasticTrainConfig(out=str(tmp_path), warmup_epochs=-0.5).validate()  # step 6c runs it at 0: allowed
    ElasticTrainConfig(out=str(tmp_path), warmup_epochs=0).validate()
    with pytest.raises(TrainError, match=r"^--kd-weight must be in \(0, 100\], got 0\.0$"):
        ElasticTrainConfig(out=str(tmp_path), kd_weight=0.0).validate()
    assert search_main(["elastic-train", "--out", str(tmp_path), "--space", "nope"]) == 2
    assert "unknown elastic space" in capsys.readouterr().err


def test_subnet_latency_equals_the_models_prediction() -> None:
    rng = random.Random(0)
    for target in ("cpu", "gpu", "mobile", "flops"):
        latency = SubnetLatency.load(FMNIST, target)
        model = load_latency_model(target, FMNIST.backbone)
        for s in [FMNIST.largest(), FMNIST.smallest(), *(FMNIST.sample(rng) for _ in range(5))]:
            assert latency(s) == pytest.approx(
                model.predict_arch(FMNIST.arch(s)).total_ms, rel=1e-6
            )  # the model's matrix is float32


def _toy_score(subnets: list) -> list[float]:
    """Rewards big kernels in the first layers and depth in the last stage: a known optimum to climb to."""
    return [sum(s.kernels[:4]) + 5 * s.depths[3] + sum(s.expands[5:]) for s in subnets]


def test_evolution_beats_random_search_with_the_same_evaluations_and_meets_the_limit() -> None:
    latency = SubnetLatency.load(FMNIST, "cpu")
    limit = 0.8 * latency(FMNIST.baseline())
    cfg = EvolutionConfig(population=20, generations=15, seed=0)
    evo = evolve(FMNIST, _toy_score, latency, limit, cfg)
    rand = random_search(FMNIST, _toy_score, latency, limit, evo.evaluations, seed=0)
    assert evo.evaluations == 20 + 15 * 15
    assert evo.best.score > rand.best.score
    assert all(c.latency <= limit for c in evo.population + rand.population)
    assert evo.best_per_generation == sorted(evo.best_per_generation)  # elitist: never gets worse
    with pytest.raises(SearchLimitError, match="below the smallest"):
        evolve(FMNIST, _toy_score, latency, 0.1 * latency(FMNIST.smallest()), cfg)


def test_kendall_tau_matches_scipy_with_ties() -> None:
    from scipy.stats import kendalltau

    rng = random.Random(3)
    a = [rng.randint(0, 5) for _ in range(40)]
    b = [x + rng.randint(0, 3) for x in a]
    assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic, abs=1e-12)
    lo, hi = bootstrap_tau(a, b, samples=300)
    assert lo <= kendall_tau(a, b) <= hi
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0


def test_an_existing_run_is_only_continued_with_resume(tmp_path: Path) -> None:
    cfg = ElasticTrainConfig(out=str(tmp_path / "r"), stop_after_steps=1, **TINY)
    train_supernet(cfg)
    with pytest.raises(TrainError, match="exists"):
        train_supernet(replace(cfg, stop_after_steps=None))


def test_extract_writes_the_named_subnet(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "fmnist_base_inherited"
    assert search_main(["extract", "--supernet", str(trained), "--subnet", "baseline", "--out", str(out)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    info = weights_dir_info(out)
    assert FMNIST.subnet_of(info.arch) == FMNIST.baseline() and record["subnet"] == str(FMNIST.baseline())
    assert info.metrics["val_top1_inherited"] == record["val_top1_inherited"]
    other = str(tmp_path / "other")  # not `out`: a used folder is refused before the subnet is read
    assert search_main(["extract", "--supernet", str(trained), "--subnet", "d9-k3-e3", "--out", other]) == 2
    assert "depths" in capsys.readouterr().err
    assert search_main(["extract", "--supernet", str(trained), "--subnet", "big", "--out", other]) == 2
    assert "bad subnet 'big'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fmnist_base_inherited"]  # a refusal leaves nothing


def test_extract_refuses_a_folder_with_the_users_files_and_force_replaces_it(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("config.json", "model.safetensors"):
        (out / name).write_text(f"the user's {name}")
    args = ["extract", "--supernet", str(trained), "--subnet", "smallest", "--out", str(out)]
    assert search_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: --out {out}: exists and is not an empty folder (holds config.json, model.safetensors); "
        "choose another or pass --force"
    ]
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        n: f"the user's {n}" for n in ("config.json", "model.safetensors")
    }
    assert search_main([*args, "--force"]) == 0
    assert FMNIST.subnet_of(weights_dir_info(out).arch) == FMNIST.smallest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_second_specialize_into_the_same_folder_fails_in_one_line_and_the_first_finishes(
    with_predictor: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import search.elastic.specialize as spec_module

    started, go = threading.Event(), threading.Event()
    real_write = spec_module.save_subnet

    def slow_write(*args: Any) -> Any:
        if not started.is_set():  # only the first writer waits: a second one that got through fails fast
            started.set()
            go.wait(120)
        return real_write(*args)

    monkeypatch.setattr(spec_module, "save_subnet", slow_write)
    out = tmp_path / "net"
    args = ["specialize", "--supernet", str(with_predictor), "--lut", "cpu", "--factor", "0.75", "--out", str(out)]
    args += ["--population", "8", "--generations", "1", "--top", "1"]
    codes: list[int] = []
    first = threading.Thread(target=lambda: codes.append(search_main(args)))
    first.start()
    try:
        assert started.wait(300), "the first specialize did not reach its write"
        assert search_main([*args, "--force"]) == 2
    finally:
        go.set()
        first.join(300)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert err == [
        f"error: --out {out}: another run is writing this folder now; wait for it to finish or choose another"
    ]
    assert codes == [0] and (out / "specialize.json").is_file()
    create_model(str(out), pretrained=True)  # the first's result, whole


KILLED_EXTRACT = """
import sys, time
from pathlib import Path
import search.elastic.extract as sf
real = sf.write_subnet
def slow(*args):
    real(*args)
    Path(sys.argv[1]).touch()
    time.sleep(600)
sf.write_subnet = slow
from search.cli import main
main(sys.argv[2:])
"""


def test_a_sigkilled_extract_leaves_no_folder_and_a_rerun_succeeds(trained: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    out, ready = tmp_path / "net", tmp_path / "ready"
    args = ["extract", "--supernet", str(trained), "--subnet", "baseline", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EXTRACT, str(ready), *args], env=env)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the extract did not reach its write"
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists()  # the weights were written, but into a temp folder that never became --out
    assert search_main(args) == 0
    assert FMNIST.subnet_of(weights_dir_info(out).arch) == FMNIST.baseline()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net", "ready"]  # the leftovers were removed


def test_fine_tune_starts_from_the_inherited_weights_with_a_teacher(trained: Path, tmp_path: Path) -> None:
    for subnet, folder in (("largest", "teacher"), ("baseline", "student")):
        assert (
            search_main(["extract", "--supernet", str(trained), "--subnet", subnet, "--out", str(tmp_path / folder)])
            == 0
        )
    student, out = tmp_path / "student", tmp_path / "tuned"
    args = ["train", "--arch", str(student), "--init", str(student), "--teacher", str(tmp_path / "teacher"), "--out"]
    args += [str(out), "--dataset", "synthetic", "--epochs", "1", "--batch-size", "32", "--limit-train", "64"]
    assert search_main([*args, "--lr", "1e-9", "--warmup-epochs", "0", "--ema", "0", "--no-progress"]) == 0
    before, after = load_file(student / "model.safetensors"), load_file(out / "model.safetensors")
    convs = [k for k in before if k.endswith("conv.weight")]
    assert convs and all(torch.allclose(before[k], after[k], atol=1e-6) for k in convs)
    source = json.loads((out / "config.json").read_text())["metadata"]["source"]
    assert source.startswith(f"fine-tuned from {student} with distillation from {tmp_path / 'teacher'}")


def test_a_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    cfg = ElasticTrainConfig(out=str(tmp_path / "c"), stop_after_steps=1, **TINY)
    train_supernet(cfg)
    ckpt = tmp_path / "c" / "checkpoint.pt"
    assert (tmp_path / "c" / "checkpoint.pt.sha256").is_file()
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 1
    ckpt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        train_supernet(replace(cfg, resume=True))


def test_no_test_scores_the_validation_split_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import search.training.train as train_module

    seen = []
    real = train_module.Trainer.evaluate
    monkeypatch.setattr(
        train_module.Trainer, "evaluate", lambda self, m, loader, **k: seen.append(loader) or real(self, m, loader, **k)
    )
    out = tmp_path / "t"
    args = ["train", "--arch", "uniform:fmnist:k3e3", "--dataset", "synthetic", "--epochs", "1", "--batch-size", "32"]
    assert (
        search_main(
            [*args, "--limit-train", "64", "--val-size", "100", "--no-test", "--no-progress", "--out", str(out)]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["n"] == 100 and metrics["val_top1"] == metrics["top1"]
    assert seen and all(loader.num_samples == 100 for loader in seen)  # the 500 test images never scored
    assert search_main([*args, "--no-test", "--out", str(tmp_path / "u")]) == 2


def _load_benchmark(name: str, folder: str = "benchmarks") -> Any:
    """A script of ``folder`` (benchmarks/ measure; scripts/ build and bundle nets) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _benchmark(name: str, args: list[str], capsys: pytest.CaptureFixture) -> dict:
    import sys

    module = _load_benchmark(name)
    argv = sys.argv
    sys.argv = [name, *args]
    try:
        assert module.main() == 0
    finally:
        sys.argv = argv
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def with_predictor(trained: Path) -> Path:
    if not (trained / "predictor.json").is_file():
        assert search_main(["elastic-predictor", "--supernet", str(trained), "--subnets", "12", "--no-progress"]) == 0
    return trained


def test_specialize_keeps_the_shortlisted_subnet_that_measured_best(
    with_predictor: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The predictor only shortlists: the net written is the one with the best measured accuracy, here the one
    the predictor ranked last (measurements that reverse its ranking are stubbed in)."""
    predictor, _ = load_predictor(FMNIST, with_predictor)

    def reversed_top1(_evaluator: Any, _supernet: Any, subnet: Any) -> float:
        with torch.no_grad():
            return round(1.0 - predictor(encode(FMNIST, [subnet])).item(), 6)

    monkeypatch.setattr(specialize_module.SubnetEvaluator, "top1", reversed_top1)
    out = tmp_path / "spec"
    args = ["specialize", "--supernet", str(with_predictor), "--lut", "cpu", "--factor", "0.75", "--out", str(out)]
    assert search_main([*args, "--population", "8", "--generations", "2", "--top", "4", "--name", "spec"]) == 0
    spec = json.loads((out / "specialize.json").read_text())
    shortlist = spec["shortlist"]
    assert len({row["val_top1"] for row in shortlist}) > 1  # precondition: a choice to make
    best = max(shortlist, key=lambda row: row["val_top1"])
    assert (spec["subnet"], spec["val_top1"]) == (best["subnet"], best["val_top1"])
    assert best["predicted"] == min(row["predicted"] for row in shortlist)


def test_the_search_benchmark_runs_on_a_tiny_supernet(with_predictor: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--supernet", str(with_predictor), "--seeds", "1", "--population", "8", "--generations", "2"]
    summary = _benchmark("elastic_search", args, capsys)
    assert len(summary["rows"]) == 9 and summary["all_meet_limit"]


def test_the_protocol_runs_end_to_end_on_a_tiny_supernet(
    with_predictor: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    module = _load_benchmark("specialization_protocol", "scripts")
    # on a tiny supernet the rule's outcome is chance: choose the 1.0x net, so the bundle step runs
    monkeypatch.setattr(module, "choose", lambda val, lut: f"{lut}_1.0")
    args = ["--supernet", str(with_predictor), "--out", str(tmp_path), "--luts", "cpu", "--factors", "0.75,1.0"]
    args += ["--seeds", "2", "--population", "8", "--generations", "2", "--limit-train", "256"]
    monkeypatch.setattr(sys, "argv", ["specialization_protocol", *args])
    assert module.main() == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["predictor_check"]["nets"]["proxyless_mobile"]["paper_ms"] == 78.0
    cpu = summary["hardware"]["cpu"]
    assert (
        set(cpu["rule1_inherited"]) == {"0.75", "1.0"} and len(cpu["rule2_fine_tuned"]["1.0"]["mcnemar_per_seed"]) == 2
    )
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["bundle"]["cpu"] == cpu["bundle"] == "cpu_1.0" and (tmp_path / "pareto.png").is_file()
    seed = selection["bundle_seed"]["cpu"]
    assert selection["val_per_seed"]["cpu_1.0"][seed] == max(selection["val_per_seed"]["cpu_1.0"])
    assert set(summary["cpu_measured_ms"]) == {"B0", "cpu_1.0"} and min(summary["cpu_measured_ms"].values()) > 0
    # the bundle folder holds the chosen seed's weights exactly as they were scored on the test set
    net = create_model(str(tmp_path / "bundle" / "cpu"), pretrained=True).eval()
    protocol = net.info.metrics["protocol"]
    assert protocol["bundled_seed"] == seed and protocol["seeds"] == [0, 1]
    assert net.info.metrics["top1"] == protocol["test_top1_per_seed"][seed]
    info = net.info
    test = module.build_eval_dataset(info.dataset, "test", None, info.input_size[1], info.mean, info.std)
    assert evaluate(net, test).top1 == pytest.approx(info.metrics["top1"], abs=1e-9)
    # a finished run reports again from its figures, without reading the test set a second time
    monkeypatch.setattr(module, "run", lambda *a: pytest.fail("the protocol ran again"))
    monkeypatch.setattr(sys, "argv", ["specialization_protocol", *args, "--docs", str(tmp_path / "docs" / "results")])
    (tmp_path / "docs").mkdir()
    assert module.main() == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(summary))
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "Decision:" in page and "(results.png)" in page and (tmp_path / "docs" / "results.png").is_file()


def test_the_schedule_benchmark_trains_both_schedules_and_ranks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ranking = tmp_path / "ranking"
    ranking.mkdir()
    names = [str(FMNIST.sample(random.Random(i))) for i in range(5)]
    (ranking / "subnets.json").write_text(json.dumps(names))
    rows = "".join(f"{n},0.5,0.{90 + i}\n" for i, n in enumerate(names[:4]))  # the 5th not trained alone yet
    (ranking / "standalone.csv").write_text("subnet,cpu_ms,standalone_val_top1\n" + rows)
    args = ["--dataset", "synthetic", "--epochs", "1", "--limit-train", "256", "--val-size", "200"]
    args += ["--calib-images", "64", "--ranking", str(ranking), "--runs", str(tmp_path / "runs")]
    args += ["--out", str(tmp_path / "out"), "--budget-min", "0"]
    assert _benchmark("elastic_schedule", args, capsys)["pending"] == ["sandwich", "progressive"]
    summary = _benchmark("elastic_schedule", args[:-2], capsys)
    assert summary["subnets"] == 4 and set(summary["runs"]) == {"sandwich", "progressive"}
    assert list(summary["runs"]["progressive"]["inherited_val_top1"]) == names[:4]
    assert summary["ranks_better"] in summary["runs"]
    assert json.loads((tmp_path / "out" / "schedule.json").read_text()) == summary


def test_the_head_to_head_scores_both_routes_alike(
    with_predictor: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    searched = Path(__file__).parents[1] / "benchmarks" / "results" / "fmnist_search_cpu_1x"
    args = ["--supernet", str(with_predictor), "--out", str(tmp_path), "--population", "8", "--generations", "2"]
    args += ["--nets", str(tmp_path / "nets"), "--gradient", f"1.0={searched / 'cpu'}"]
    args += ["--gradient", f"0.75={searched / 'mobile' / 'arch.json'}"]
    summary = _benchmark("search_head_to_head", [*args, "--budget-s", "0.5"], capsys)
    verdict = _load_benchmark("search_head_to_head").verdict
    nets = summary["nets"]
    assert list(nets) == ["baseline", "gradient_0.75", "elastic_0.75", "gradient_1.0", "elastic_1.0"]
    cpu_arch = ArchSpec.from_json((searched / "cpu" / "arch.json").read_text())
    assert nets["gradient_1.0"]["subnet"] == str(FMNIST.subnet_of(cpu_arch))  # its zero op is a skipped layer
    for f, target in summary["targets"].items():
        assert nets[f"elastic_{f}"]["predicted"] <= target["limit"]
        assert target["mcnemar"]["images"] == 200  # the winner follows from the figures beside it
        (acc_g, ms_g), (acc_e, ms_e) = (
            (n["val_top1_inherited"], n["measured_ms"] or n["predicted"])
            for n in (nets[f"gradient_{f}"], nets[f"elastic_{f}"])
        )
        assert target["winner"] == verdict(acc_g, acc_e, target["mcnemar"]["p"], ms_g, ms_e)
    assert all(r["measured_ms"] > 0 for r in nets.values())  # the cpu table is this machine's kind: measured
    assert json.loads((tmp_path / "head_to_head.json").read_text()) == summary
    assert sorted(p.name for p in (tmp_path / "nets").iterdir()) == ["elastic_0.75", "elastic_1.0"]  # not in --out


def test_the_head_to_head_verdict_needs_significance_or_a_clear_speedup() -> None:
    verdict = _load_benchmark("search_head_to_head").verdict
    assert verdict(0.90, 0.92, 0.01, 1.0, 1.04) == "elastic"  # more accurate, at most 5% slower
    assert verdict(0.90, 0.92, 0.01, 1.0, 1.20) == "tie"  # more accurate but much slower
    assert verdict(0.92, 0.90, 0.01, 1.0, 0.96) == "gradient"
    assert verdict(0.90, 0.92, 0.20, 1.0, 1.0) == "tie"  # not significant, same speed
    assert verdict(0.90, 0.90, 0.90, 1.0, 0.85) == "elastic"  # as accurate, 15% faster


def test_the_ranking_benchmark_trains_alone_measures_seed_noise_and_ranks(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--supernet", str(trained), "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")]
    args += ["--subnets", "4", "--epochs", "1", "--limit-train", "256", "--noise-seeds", "2"]
    summary = _benchmark("elastic_ranking", args, capsys)
    rows = summary["rows"]
    assert summary["subnets"] == 4 and len(rows) == 4
    standalone, inherited = ([r[k] for r in rows] for k in ("standalone_val_top1", "inherited_val_top1"))
    assert summary["kendall_tau"] == round(kendall_tau(standalone, inherited), 4)
    spread = summary["spread"]
    median = json.loads((tmp_path / "out" / "subnets.json").read_text())[2]
    assert spread["subnet"] == median and len(spread["seed_val_top1"]) == 3
    assert spread["seed_val_top1"][0] == summary["rows"][2]["standalone_val_top1"]  # seed 0 is the ranking's run
    assert (tmp_path / "out" / "ranking.png").is_file()
    with pytest.raises(SystemExit, match="other settings"):  # a different schedule never mixes into the results
        _benchmark("elastic_ranking", [*args[:-5], "2", "--limit-train", "256"], capsys)


def test_the_inheritance_benchmark_compares_with_runs_of_the_same_arch(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for arch in ("k7e6", "k3e6"):
        args = ["train", "--arch", f"uniform:fmnist:{arch}", "--out", str(tmp_path / arch), "--dataset", "synthetic"]
        args += ["--epochs", "1", "--batch-size", "32", "--limit-train", "64", "--no-progress"]
        assert search_main(args) == 0
    out = tmp_path / "results" / "inheritance.json"
    summary = _benchmark(
        "elastic_inheritance",
        ["--supernet", str(trained), "--largest-run", str(tmp_path / "k7e6"), "--out", str(out)],
        capsys,
    )
    assert json.loads(out.read_text()) == summary  # the file holds what was printed
    largest, baseline = summary["nets"]["largest"], summary["nets"]["baseline"]
    assert largest["standalone_test_top1"] == json.loads((tmp_path / "k7e6" / "metrics.json").read_text())["top1"]
    assert baseline["standalone_test_top1"] == 0.9459  # fmnist_mobilenetv2, bundled
    assert largest["gap_points"] == round((largest["inherited_test_top1"] - largest["standalone_test_top1"]) * 100, 2)
    with pytest.raises(SystemExit, match="another arch"):
        _benchmark("elastic_inheritance", ["--supernet", str(trained), "--largest-run", str(tmp_path / "k3e6")], capsys)


def test_init_starts_from_a_trained_supernet(trained: Path, tmp_path: Path) -> None:
    start = load_supernet(trained)[0].state_dict()
    trainer = ElasticTrainer(ElasticTrainConfig(out=str(tmp_path / "i"), init=str(trained), **TINY))
    assert all(torch.equal(v, start[k]) for k, v in trainer.model.state_dict().items())
    fresh = ElasticTrainer(ElasticTrainConfig(out=str(tmp_path / "f"), **TINY)).model.state_dict()
    assert not all(torch.equal(v, start[k]) for k, v in fresh.items())


def test_with_a_teacher_every_subnet_learns_from_the_labels_and_the_teacher(tmp_path: Path) -> None:
    """The students' loss is the teacher's distillation loss, not the largest subnet's soft targets."""
    from search.training.recipe import distillation_loss

    trainer = ElasticTrainer(ElasticTrainConfig(out=str(tmp_path / "t"), teacher="fmnist_mobilenetv2", **TINY))
    x, y = next(iter(trainer.loader))
    trainer._train_mode()
    with torch.no_grad():
        taught = trainer.teacher(x).softmax(1)
        want = [distillation_loss(trainer.model(x, s), y, 0.1, taught, 1.0).item() for s in trainer.subnets_of_step(0)]
    trainer.train_step(x, y)
    assert trainer.last.distill == pytest.approx(sum(want) / len(want), rel=1e-4)


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [("--init", "no/such/supernet", "no/such/supernet"), ("--teacher", "no_such_net", "no_such_net")],
)
def test_elastic_train_refuses_a_missing_init_or_teacher_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str, said: str
) -> None:
    assert search_main(["elastic-train", "--out", str(tmp_path / "r"), "--dataset", "synthetic", flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and said in err[0]
