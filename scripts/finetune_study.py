"""The fine-tune study of docs/finetune.md, step by step; resumable (run the same command again to continue).

    python scripts/finetune_study.py step1     # lr and distillation: 4 arms from the 0.75x cpu net
    python scripts/finetune_study.py step2     # step 1's choice for 8 epochs: the val curve

Each arm is a ``proxyless search train --init`` run under ``runs/finetune/`` (checkpointed, ``--resume``d);
finished arms are not rerun. Each step's summary goes into ``benchmarks/results/finetune_study.json``; the last line
printed is that summary as one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


STEPS = {"step1": step1, "step2": step2}


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
