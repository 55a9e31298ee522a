"""The fine-tune study of docs/finetune.md, step by step; resumable (run the same command again to continue).

    python scripts/finetune_study.py step1     # lr and distillation: 4 arms from the 0.75x cpu net
    python scripts/finetune_study.py step2     # step 1's choice for 8 epochs: the val curve
    python scripts/finetune_study.py step3     # the 30-minute journey: profile + specialize --finetune-min 20
    python scripts/finetune_study.py zoo       # step 4: the journey's recipe for the 4 bundled nets, 2 seeds
    python scripts/finetune_study.py step6a    # the supernet continued 2 epochs: a teacher at 2 lrs, a control
    python scripts/finetune_study.py step7     # the bundled archs trained alone, 2 seeds (about 13 CPU-hours)
    python scripts/finetune_study.py step7-bundle  # step 7's choices into the zoo, then the tables again
    python scripts/finetune_study.py step6c    # the supernet continued gently (lr 0.01, 0.02, no warm-up): a pilot
    python scripts/finetune_study.py step5     # the curve: fine-tune minutes against top-1, 3 nets, references

Each arm is a ``proxyless search train --init`` run under ``runs/finetune/`` (checkpointed, ``--resume``d);
finished arms are not rerun. Each step's summary goes into ``benchmarks/results/finetune_study.json``; the last line
printed is that summary as one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the packages and scripts/, for the late imports below
RUNS = ROOT / "runs" / "finetune"
RESULTS = ROOT / "benchmarks" / "results" / "finetune_study.json"  # one summary per step
TEACHER = "fmnist_mobilenetv2"
STEPS_PER_EPOCH = 215  # 55,000 training images in batches of 256 (the last partial batch kept)


@dataclass(frozen=True)
class Arm:
    """One fine-tune of a start net: ``proxyless search train`` options that differ between arms."""

    name: str
    lr: float
    teacher: str | None
    epochs: int = 2
    seed: int = 0
    eval_every: int | None = None  # default: the last epoch only

    def command(self, start: Path, out: Path) -> list[str]:
        start = start.relative_to(ROOT)  # run from ROOT; a checkpoint that records it resumes in another clone
        cmd = [sys.executable, "-m", "zoo.proxyless_cli", "search", "train", "--arch", str(start)]
        cmd += ["--init", str(start), "--out", str(out), "--epochs", str(self.epochs), "--lr", str(self.lr)]
        cmd += ["--warmup-epochs", "0.1", "--ema", "0", "--val-size", "5000", "--no-test", "--seed", str(self.seed)]
        cmd += ["--eval-every", str(self.eval_every or self.epochs), "--resume", "--no-progress"]
        teacher = ROOT / "zoo" / "pretrained" / self.teacher if self.teacher else None
        return cmd + (["--teacher", str(teacher)] if teacher else [])


STEP1 = [
    Arm("A_lr0.01_kd", 0.01, TEACHER),
    Arm("B_lr0.04_kd", 0.04, TEACHER),
    Arm("C_lr0.1_kd", 0.1, TEACHER),
    Arm("D_lr0.04_nokd", 0.04, None),
]


def start_net(name: str, lut: str, factor: float) -> Path:
    """The specialized net every arm starts from (``specialize`` without fine-tune), made once."""
    out = RUNS / name
    if not (out / "config.json").is_file():
        cmd = [sys.executable, "-m", "zoo.proxyless_cli", "search", "specialize", "--lut", lut]
        cmd += ["--factor", str(factor), "--out", str(out), "--no-progress"]
        subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def run_arm(arm: Arm, start: Path) -> dict:
    out = RUNS / f"{start.name}_{arm.name}"
    if not (out / "metrics.json").is_file():
        subprocess.run(arm.command(start, out), check=True, cwd=ROOT)
    metrics = json.loads((out / "metrics.json").read_text())
    return {**asdict(arm), "start": start.name, "val_top1": metrics["top1"], "split": metrics["split"],
            "train_seconds": metrics["train_seconds"]}  # fmt: skip


def step1() -> dict:
    start = start_net("cpu075", "cpu", 0.75)
    inherited = json.loads((start / "config.json").read_text())["metadata"]["metrics"]["val_top1_inherited"]
    arms = [run_arm(arm, start) for arm in STEP1]
    distilled = [a for a in arms if a["teacher"]]
    best = max(a["val_top1"] for a in distilled)
    chosen = min((a for a in distilled if a["val_top1"] >= best - 0.001), key=lambda a: a["lr"])
    by_name = {a["name"]: a for a in arms}
    return {
        "step": "step1",
        "start": start.name,
        "val_top1_inherited": inherited,
        "arms": arms,
        "chosen_lr": chosen["lr"],
        "distillation_helps": by_name["B_lr0.04_kd"]["val_top1"] > by_name["D_lr0.04_nokd"]["val_top1"],
    }


def step2() -> dict:
    start = start_net("cpu075", "cpu", 0.75)
    arm = run_arm(Arm("E_lr0.01_nokd_8ep", 0.01, None, epochs=8, eval_every=2), start)
    log = json.loads((RUNS / f"{start.name}_{arm['name']}" / "log.json").read_text())
    curve = {row["epoch"]: row["val_top1"] for row in log["epochs"] if "val_top1" in row}
    return {"step": "step2", "start": start.name, "arm": arm, "val_top1_by_epoch": curve}


JOURNEY = ROOT / "runs" / "journey"
PROXYLESS = [sys.executable, "-m", "zoo.proxyless_cli"]
JOURNEY_COMMANDS = {  # as the README writes them (after `proxyless`), run in JOURNEY
    "profile": "search profile --space fmnist --device cpu --runtime onnxruntime --batch 1 --threads 1 "
    "--out my_cpu.json",
    "specialize": "search specialize --lut my_cpu.json --factor 0.75 --finetune-min 20 --out my_cpu_net",
}


def step3() -> dict:
    """The journey, timed command by command. Its fine-tune runs on the clock, so a journey cut short is void:
    it starts again from nothing rather than resuming."""
    times_file = JOURNEY / "times.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    if set(times) != set(JOURNEY_COMMANDS):
        shutil.rmtree(JOURNEY, ignore_errors=True)
        JOURNEY.mkdir(parents=True)
        for name, args in JOURNEY_COMMANDS.items():
            tick = time.monotonic()
            subprocess.run(PROXYLESS + shlex.split(args), check=True, cwd=JOURNEY)
            times[name] = round(time.monotonic() - tick, 1)
        times_file.write_text(json.dumps(times) + "\n")
    net = JOURNEY / "my_cpu_net"
    speed = JOURNEY / "speed"
    if not speed.with_suffix(".json").is_file():
        cmd = [sys.executable, str(ROOT / "scripts" / "specialization.py"), str(net), TEACHER, "--out", str(speed)]
        subprocess.run(cmd, check=True, cwd=ROOT)
    figures = json.loads(speed.with_suffix(".json").read_text())
    record = json.loads((net / "specialize.json").read_text())
    cpu = figures["latency_ms"]["cpu"]
    return {
        "step": "step3",
        "seconds": {**times, "total": round(sum(times.values()), 1)},
        "subnet": record["subnet"],
        "finetune_steps": record["finetune"]["steps"],
        "val_top1_inherited": record["val_top1"],
        "val_top1_finetuned": record["finetune"]["val_top1"],
        "test_top1": record["test_top1"],
        "baseline_test_top1": record["baseline_test_top1"],
        "cpu_onnxruntime_ms": {"my_cpu_net": cpu["my_cpu_net"], TEACHER: cpu[TEACHER]},
        "speedup_measured": round(cpu[TEACHER] / cpu["my_cpu_net"], 3),
        "paired": paired_test(net),
    }


def paired_test(net: Path) -> dict:
    """McNemar of ``net`` against the baseline on the 10,000 test images."""
    from scripts.specialization import test_answers
    from search.training.stats import mcnemar
    from zoo.evaluate import load_for_eval

    right = [test_answers(load_for_eval(str(n))[0], None) for n in (TEACHER, net)]
    return mcnemar(*right)


ZOO_NETS = ("fmnist_proxyless_cpu", "fmnist_mobilenetv2", "fmnist_proxyless_mobile", "fmnist_proxyless_gpu")
CARRY = ROOT / "checkpoints" / "finetune_zoo"  # finished runs, committed while the step spans sessions
CARRIED = ("config.json", "model.safetensors", "log.json", "metrics.json")  # metrics last: it marks a whole copy


def zoo() -> dict:
    """Step 4's runs (seed 0 of every net first); each finished run is copied into CARRY for the next session, as
    is, by hand, the folder of a run that a session's end stops (its checkpoint). Once every run is done: the
    choices, then the test figures."""
    study = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if "step3" not in study:
        raise SystemExit("error: step 4 takes its length from step 3's journey; run step3 first")
    epochs = max(1, round(study["step3"]["finetune_steps"] / STEPS_PER_EPOCH))
    runs = []
    for seed in (0, 1):
        for name in ZOO_NETS:
            arm = Arm(f"zoo_s{seed}", 0.01, None, epochs=epochs, seed=seed)
            run, carried = RUNS / f"{name}_{arm.name}", CARRY / f"{name}_{arm.name}"
            if carried.is_dir() and not any((run / f).is_file() for f in ("metrics.json", "checkpoint.pt")):
                shutil.copytree(carried, run, dirs_exist_ok=True)  # finished, or its checkpoint at a session's end
            runs.append({"net": name, **run_arm(arm, ROOT / "zoo" / "pretrained" / name)})
            if not (carried / "metrics.json").is_file():
                shutil.rmtree(carried, ignore_errors=True)  # a mid-way checkpoint carried before
                carried.mkdir(parents=True)
                for file in CARRIED:
                    shutil.copy2(run / file, carried / file)
    return {"step": "step4", "epochs": epochs, "runs": runs, **zoo_choices()}


def split_answers(folder: Path) -> dict[str, np.ndarray]:
    """Which images of the validation split (the 5,000 held out of training, split seed 0) and of the test split
    the net in ``folder`` gets right."""
    from search.training.data import build_train_data
    from zoo.evaluate import load_for_eval, right_answers

    model = load_for_eval(str(folder))[0]
    data = build_train_data("fashion-mnist", None, 256, input_size=28, val_size=5000, split_seed=0)
    return {"val": right_answers(model, data.val), "test": right_answers(model, data.test)}


def seed_figures(seeds: list[np.ndarray]) -> dict:
    """The seeds' test mean, the 95% binomial interval of that mean (all seeds' images) and the seeds' range."""
    mean = float(np.concatenate(seeds).mean())
    half = 1.96 * math.sqrt(mean * (1 - mean) / sum(map(len, seeds)))
    each = [round(float(a.mean()), 4) for a in seeds]
    return {
        "seeds_test_mean": round(mean, 4),
        "seeds_test_binomial95": [round(mean - half, 4), round(mean + half, 4)],
        "seeds_test_range": [min(each), max(each)],
    }


def zoo_choices() -> dict:
    """Step 4's choices (on validation for the specialized nets, on test for the baseline: the harder bar), then
    the test figures: every candidate's, the seed means and intervals, and the bundled pairs' McNemar tests."""
    from search.training.stats import mcnemar

    answers, figures = {}, {}
    for name in ZOO_NETS:
        candidates = {"today": ROOT / "zoo" / "pretrained" / name}
        candidates |= {f"seed{s}": RUNS / f"{name}_zoo_s{s}" for s in (0, 1)}
        answers[name] = {label: split_answers(folder) for label, folder in candidates.items()}
    for name, found in answers.items():
        val = {label: round(float(a["val"].mean()), 4) for label, a in found.items()}
        test = {label: round(float(a["test"].mean()), 4) for label, a in found.items()}
        by = test if name == TEACHER else val  # the baseline saw the validation images in training
        chosen = "today"
        for label in ("seed0", "seed1"):
            chosen = label if by[label] > by[chosen] else chosen
        figures[name] = {
            "val_top1": val,
            "test_top1": test,
            "chosen": chosen,
            "chosen_on": "test" if name == TEACHER else "val",
            **seed_figures([found[f"seed{s}"]["test"] for s in (0, 1)]),
        }
    base = answers[TEACHER][figures[TEACHER]["chosen"]]["test"]
    for name in ZOO_NETS:
        if name != TEACHER:
            net = answers[name][figures[name]["chosen"]]["test"]
            figures[name]["vs_baseline"] = {
                "points": round(100 * float(net.mean() - base.mean()), 2),
                "mcnemar": mcnemar(base, net),
            }
    return {"zoo": figures}


PILOT_LRS = (0.05, 0.2)
CONTROL_LR = 0.05  # the chosen pilot lr, continued without a teacher: the teacher's share of the loss


def three_vals(record: dict) -> dict:
    """A supernet's three recorded val top-1s (largest, baseline, smallest subnet) and their mean: 6a's and 6c's
    figure of merit."""
    names = ("val_top1_largest", "val_top1_baseline", "val_top1_smallest")
    return {n: record[n] for n in names} | {"mean": round(sum(record[n] for n in names) / 3, 4)}


def bundled_supernet() -> dict:
    """``three_vals`` of the bundled supernet, as its ``supernet.json`` records them."""
    from search.elastic.store import BUNDLED

    return three_vals(json.loads((BUNDLED / "fmnist" / "supernet.json").read_text())["metadata"]["validation"])


def continue_supernet(out: Path, lr: float, teacher: str | None, warmup: float = 0.2) -> dict:
    """A 2-epoch continuation of the bundled supernet (run unless finished): its ``three_vals``."""
    from search.elastic.store import BUNDLED

    if not (out / "metrics.json").is_file():
        cmd = [*PROXYLESS, "search", "elastic-train", "--init", str(BUNDLED / "fmnist")]
        cmd += ["--teacher", teacher] if teacher else []
        cmd += ["--epochs", "2", "--warmup-epochs", str(warmup), "--lr", str(lr), "--out", str(out), "--resume"]
        subprocess.run([*cmd, "--no-progress"], check=True, cwd=ROOT)
    return three_vals(json.loads((out / "metrics.json").read_text()))


def step6a() -> dict:
    """Two 2-epoch continuations of the bundled supernet with the baseline as teacher, one per peak lr, and the
    control without a teacher."""
    bundled = bundled_supernet()
    arms = {str(lr): continue_supernet(RUNS / f"supernet_teacher_lr{lr}", lr, TEACHER) for lr in PILOT_LRS}
    control = continue_supernet(RUNS / f"supernet_noteacher_lr{CONTROL_LR}", CONTROL_LR, None)
    best = max(a["mean"] for a in arms.values())
    chosen = min((float(lr) for lr, a in arms.items() if a["mean"] >= best - 0.001))
    before = bundled["mean"]
    return {
        "step": "step6a",
        "bundled": bundled,
        "arms": arms,
        "chosen_lr": chosen,
        "teacher_helps": best > before,
        "control_no_teacher": {"lr": CONTROL_LR, **control},
        "continuation_helps": control["mean"] >= before,
    }


GENTLE_LRS = (0.01, 0.02)  # step 6c's pilot: no re-warm-up, no teacher
MARGIN = 0.001  # 0.1 points: what an arm's mean must gain, and the most its largest subnet may lose


def gentle_choice(arms: dict[str, dict], bundled: dict) -> float | None:
    """Step 6c's rule (fixed before its runs): the arms whose mean beats the bundled supernet's by ``MARGIN`` and
    whose largest subnet loses at most ``MARGIN``; of those, the higher mean (within ``MARGIN``: the smaller lr)."""
    passing = {
        float(lr): a["mean"]
        for lr, a in arms.items()
        if round(a["mean"] - bundled["mean"], 4) >= MARGIN
        and round(a["val_top1_largest"] - bundled["val_top1_largest"], 4) >= -MARGIN
    }
    if not passing:
        return None
    best = max(passing.values())
    return min(lr for lr, mean in passing.items() if round(best - mean, 4) <= MARGIN)


def step6c() -> dict:
    """Step 6c's pilot: two gentler continuations of the bundled supernet, judged by ``gentle_choice``."""
    bundled = bundled_supernet()
    arms = {str(lr): continue_supernet(RUNS / f"supernet_gentle_lr{lr}", lr, None, warmup=0) for lr in GENTLE_LRS}
    chosen = gentle_choice(arms, bundled)
    return {"step": "step6c", "bundled": bundled, "arms": arms, "chosen_lr": chosen, "goes_on": chosen is not None}


ALONE = ROOT / "checkpoints"  # make fmnist-train-alone's runs, committed while step 7 lasts
ALONE_RUNS = [(n, seed) for seed in (0, 1) for n in ZOO_NETS if (n, seed) != (TEACHER, 0)]  # its seed 0: bundled
ALONE_CARRIED = ("config.json", "model.safetensors", "log.csv", "log.json", "metrics.json")  # metrics: written last


STEP4_CARRIED_AT = "27adbdc226ba29ac8631c65d39df589d04bd9686"  # the last commit that holds step 4's runs


def step4_choice(name: str, label: str, into: Path) -> Path:
    """Step 4's chosen weights of ``name`` (``label``: today, seed0 or seed1), its run restored from git: the runs
    left the tree when step 4 ended."""
    if label == "today":
        return ROOT / "zoo" / "pretrained" / name
    into.mkdir(parents=True, exist_ok=True)
    for file in ("config.json", "model.safetensors"):
        spec = f"{STEP4_CARRIED_AT}:{CARRY.relative_to(ROOT)}/{name}_zoo_{label.replace('seed', 's')}/{file}"
        (into / file).write_bytes(
            subprocess.run(["git", "show", spec], cwd=ROOT, capture_output=True, check=True).stdout
        )
    return into


def step7() -> dict:
    """Step 7's runs in order (seed 0 of each specialized arch, then the seed-1 runs), each through ``make
    fmnist-train-alone`` in resumable chunks; a finished run keeps only its weights and logs, for git. Once every run
    is done: the test figures, each net's bundled choice (fixed in docs/finetune.md) and the paired tests."""
    from scripts.specialization import test_answers
    from search.training.stats import mcnemar
    from zoo.evaluate import load_for_eval

    folders = {}
    for name, seed in ALONE_RUNS:
        run = folders[name, seed] = ALONE / f"alone_{name}_s{seed}"
        if not (run / "metrics.json").is_file():
            make = ["make", "fmnist-train-alone", f"ALONE={name}", f"SEED={seed}", "THREADS=2"]
            subprocess.run(make, check=True, cwd=ROOT)
            if not (run / "metrics.json").is_file():
                raise SystemExit(f"{run} stopped before its 40 epochs (checkpointed): run step7 again to continue")
        for extra in (p for p in run.iterdir() if p.name not in ALONE_CARRIED):  # the checkpoint, tb/
            if extra.is_dir():
                shutil.rmtree(extra)
            else:
                extra.unlink()
    folders[TEACHER, 0] = ROOT / "zoo" / "pretrained" / TEACHER
    right = {key: test_answers(load_for_eval(str(f))[0], None) for key, f in folders.items()}
    figures = {}
    for name in ZOO_NETS:
        test = {f"seed{s}": round(float(right[name, s].mean()), 4) for s in (0, 1)}
        chosen = "seed0"  # fixed beforehand for the specialized nets (no validation split is left out)
        if name == TEACHER and test["seed1"] > test["seed0"]:
            chosen = "seed1"  # the baseline: the better on test of today's and its new run, the harder bar
        figures[name] = {"test_top1": test, "chosen": chosen, **seed_figures([right[name, s] for s in (0, 1)])}
    base = right[TEACHER, int(figures[TEACHER]["chosen"][-1])]
    for name in ZOO_NETS:
        if name != TEACHER:
            net = right[name, 0]
            gap = round(100 * float(net.mean() - base.mean()), 2)
            figures[name]["vs_baseline"] = {"points": gap, "mcnemar": mcnemar(base, net)}
    step4 = json.loads(RESULTS.read_text())["zoo"]["zoo"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ZOO_NETS:  # the protocol's last figure: each net's choice against step 4's
            folder = step4_choice(name, step4[name]["chosen"], Path(tmp) / name)
            before, now = (
                test_answers(load_for_eval(str(folder))[0], None),
                right[name, int(figures[name]["chosen"][-1])],
            )
            gap = round(100 * float(now.mean() - before.mean()), 2)
            figures[name]["vs_step4"] = {"step4": step4[name]["chosen"], "points": gap, "mcnemar": mcnemar(before, now)}
    return {"step": "step7", "runs": {f"{n}_s{s}": str(f.relative_to(ROOT)) for (n, s), f in folders.items()},
            "alone": figures}  # fmt: skip


STEP7_RECIPE = "trained alone with the baseline's 40-epoch recipe (make fmnist-train-alone), seeds 0 and 1"


def step7_protocol(figures: dict, today: dict) -> dict:
    """A net's seeds record for its metadata, from step 7's figures; a specialized net keeps the hardware and the
    factor its arch was specialized for (``today``: the metrics of the weights it replaces)."""
    low, high = figures["seeds_test_binomial95"]
    record = {
        "recipe": STEP7_RECIPE,
        "seeds": [0, 1],
        "bundled_seed": int(figures["chosen"].removeprefix("seed")),
        "test_top1_per_seed": [figures["test_top1"]["seed0"], figures["test_top1"]["seed1"]],
        "test_top1_mean_ci": [figures["seeds_test_mean"], low, high],
        "interval": "95% binomial over both seeds' test answers",
        "command": "python scripts/finetune_study.py step7",
    }
    old = today.get("protocol") or {}
    return {k: old[k] for k in ("hardware", "net") if k in old} | record


def step7_bundle() -> dict:
    """Step 7's end: each net's chosen run into the zoo (``bundle_fmnist.py``, with its seeds record and its arch's
    provenance), then the tables measured and written again."""
    study = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if "step7" not in study:
        raise SystemExit("error: step 7 has not finished: run python scripts/finetune_study.py step7 first")
    bundled = {}
    for name in ZOO_NETS:
        figures = study["step7"]["alone"][name]
        run = ROOT / study["step7"]["runs"][f"{name}_{figures['chosen'].replace('seed', 's')}"]
        today = json.loads((ROOT / "zoo" / "pretrained" / name / "config.json").read_text())["metadata"]["metrics"]
        extra = {"protocol": step7_protocol(figures, today)}
        extra |= {"specialized": today["specialized"]} if "specialized" in today else {}
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "extra.json").write_text(json.dumps(extra))
            cmd = [sys.executable, "scripts/bundle_fmnist.py", name, str(run), "--metrics-from", f"{tmp}/extra.json"]
            subprocess.run([*cmd, "--note", STEP7_RECIPE], check=True, cwd=ROOT)
        bundled[name] = str(run.relative_to(ROOT))
    for script in ("specialization.py", "results_tables.py"):
        subprocess.run([sys.executable, f"scripts/{script}"], check=True, cwd=ROOT)
    specialized = json.loads((ROOT / "benchmarks" / "results" / "specialization.json").read_text())["specialized"]
    return {"step": "step7-bundle", "bundled": bundled, "verdicts": specialized}


CURVE_FACTORS = (0.6, 0.75, 1.0)
CURVE_MINUTES = (0, 5, 10, 20, 30)  # 0: the inherited net
CURVE_CARRY = ROOT / "checkpoints" / "finetune_curve"  # each finished point's record, while step 5 lasts
CURVE_PNG = ROOT / "docs" / "finetune-curve.png"


def curve_point(factor: float, minutes: int) -> dict:
    """One point of step 5: ``specialize --lut cpu --factor F --finetune-min M`` (made unless carried). A point
    runs on the clock, so one cut short is void and starts again; a finished one's record is carried in git."""
    name = f"curve_f{factor}_m{minutes}"
    carried, out = CURVE_CARRY / f"{name}.json", RUNS / name
    if not carried.is_file():
        shutil.rmtree(out, ignore_errors=True)
        cmd = [*PROXYLESS, "search", "specialize", "--lut", "cpu", "--factor", str(factor)]
        cmd += ["--finetune-min", str(minutes), "--out", str(out.relative_to(ROOT)), "--no-progress"]
        subprocess.run(cmd, check=True, cwd=ROOT)
        CURVE_CARRY.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / "specialize.json", carried)
    record = json.loads(carried.read_text())
    tuned = record["finetune"] or {}
    return {"subnet": record["subnet"], "test_top1": record["test_top1"], "seconds": record["seconds"],
            "finetune_steps": tuned.get("steps", 0), "finetune_seconds": tuned.get("seconds", 0.0)}  # fmt: skip


def curve_reference(factor: float, subnet: str) -> dict:
    """The arch of ``factor`` trained alone with the 40-epoch recipe, seed 0: step 7's seed-0 run for the bundled
    cpu arch, else ``make fmnist-train-alone`` on the inherited point's folder, in resumable chunks."""
    bundled = json.loads((ROOT / "zoo" / "pretrained" / "fmnist_proxyless_cpu" / "config.json").read_text())
    if subnet == bundled["metadata"]["metrics"]["specialized"]["subnet"]:
        study = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        if "step7" not in study:
            raise SystemExit("error: the 0.75x reference is step 7's cpu run: run step7 first")
        return {"run": "step7: fmnist_proxyless_cpu seed 0", "test_top1": study["step7"]["alone"][
            "fmnist_proxyless_cpu"]["test_top1"]["seed0"]}  # fmt: skip
    name = f"cpu_f{factor}"
    run = ALONE / f"alone_{name}_s0"
    if not (run / "metrics.json").is_file():
        arch = f"ALONE_ARCH={RUNS.relative_to(ROOT)}/curve_f{factor}_m0"
        subprocess.run(
            ["make", "fmnist-train-alone", f"ALONE={name}", arch, "SEED=0", "THREADS=2"], check=True, cwd=ROOT
        )
    if not (run / "metrics.json").is_file():
        raise SystemExit(f"{run} stopped before its 40 epochs (checkpointed): run step5 again to continue")
    return {"run": str(run.relative_to(ROOT)), "test_top1": json.loads((run / "metrics.json").read_text())["top1"]}


def step5() -> dict:
    """Step 5: test top-1 against fine-tune minutes for the 0.6x, 0.75x and 1.0x cpu nets (every inherited point
    first, then the fine-tunes, then the stand-alone references), as a table in the JSON and a PNG."""
    points = {f: {m: curve_point(f, m) for m in CURVE_MINUTES[:1]} for f in CURVE_FACTORS}
    for factor in CURVE_FACTORS:
        points[factor] |= {m: curve_point(factor, m) for m in CURVE_MINUTES[1:]}
        if len({p["subnet"] for p in points[factor].values()}) != 1:
            raise SystemExit(f"error: the {factor}x points chose different subnets: {points[factor]}")
    references = {f: curve_reference(f, points[f][0]["subnet"]) for f in CURVE_FACTORS}
    plot_curve(points, references)
    nets = {}
    for f in CURVE_FACTORS:
        by_minutes = {m: p["test_top1"] for m, p in points[f].items()}
        nets[f"{f}x"] = {"subnet": points[f][0]["subnet"], "alone": references[f], "test_top1_by_minutes": by_minutes}
        nets[f"{f}x"]["points"] = points[f]
    return {"step": "step5", "nets": nets, "png": str(CURVE_PNG.relative_to(ROOT))}


def plot_curve(points: dict[float, dict[int, dict]], references: dict[float, dict]) -> None:
    import matplotlib

    from zoo.files import atomic_output

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for factor, color in zip(CURVE_FACTORS, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        minutes = sorted(points[factor])
        ax.plot(minutes, [100 * points[factor][m]["test_top1"] for m in minutes], "o-", color=color,
                label=f"{factor}x cpu net, fine-tuned")  # fmt: skip
        ax.axhline(100 * references[factor]["test_top1"], color=color, ls="--", lw=1,
                   label=f"{factor}x trained alone (40 epochs)")  # fmt: skip
    ax.set(xlabel="fine-tune budget (minutes, 2-core CPU)", ylabel="test top-1 (%)", xticks=CURVE_MINUTES,
           title="specialize --lut cpu --finetune-min M (Fashion-MNIST)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_output(CURVE_PNG) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


STEPS = {"step1": step1, "step2": step2, "step3": step3, "zoo": zoo, "step6a": step6a, "step7": step7}
STEPS |= {"step7-bundle": step7_bundle, "step5": step5, "step6c": step6c}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=sorted(STEPS))
    args = ap.parse_args()
    summary = STEPS[args.step]()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    study = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    RESULTS.write_text(json.dumps({**study, args.step: summary}, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
