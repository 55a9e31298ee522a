"""The Fashion-MNIST zoo pipeline: latency tables, searches and trainings in one resumable run.

``make gpu-measure`` runs it on a GPU inside a fixed time budget; ``make fmnist-zoo`` runs it on this CPU.
1. (``--gpu-tables``) GPU latency tables (torch eager, batch 8, as in the paper) for both spaces, validated.
2. The Fashion-MNIST searches: one shared supernet warm-up, then a search per target (cpu = this repo's CPU ONNX
   Runtime table, mobile = the Pixel-1 predictor, gpu = the table measured in step 1, plus a tight and a loose
   CPU search that show the latency term working), each derived net trained from scratch with one recipe beside
   the MobileNetV2-style baseline (all k3 e6).
   ``--archs-from DIR`` skips the warm-up and searches and trains the archs searched before (DIR/<target>/arch.json);
   ``--search-only`` stops after the searches (train their archs later with ``--archs-from``). Once two or more
   searches are derived, ``search/compare.json`` holds each net's latency on every search's table and the
   number of layers in which each pair differs (``proxyless search compare``).
3. (``--bench``) latency reports (``export bench``) of the trained nets and ``proxyless_mobile``.

Jobs run as parallel processes (on a GPU these nets are far too small to fill it); every training gets a time
limit that leaves room for the reports and stops checkpointed if it runs out. A stage whose output exists is
skipped and an interrupted one resumes, so running the same command again continues the work. Everything lands
in OUT (packed into OUT.tar.gz with ``--pack``). ``--smoke`` runs the pipeline tiny, to test it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_PAGE = ROOT / "docs" / "results.md"  # the page holding the generated specialization table
sys.path.insert(0, str(ROOT))
from search.space import get_space  # noqa: E402

TARGET_FACTORS = {"cpu": 0.8, "mobile": 0.8, "gpu": 0.8, "cpu_tight": 0.5, "cpu_loose": 1.2}
# Latency model per target; the gpu target's is added in stages() (this run's GPU table or the shipped one).
LATENCY_MODEL = {"cpu": "cpu", "mobile": "mobile", "cpu_tight": "cpu", "cpu_loose": "cpu"}
TRAINED = ("cpu", "mobile", "gpu")  # the searches whose nets are trained and bundled
BASELINE_ARCH = "uniform:fmnist:k3e6"  # fmnist_mobilenetv2: MobileNetV2-style, every layer k3 e6
REGAIN_MIN_S = 300.0  # a training restarted on every core needs this much time left to gain from it
GRACE_S = 120.0  # after SIGTERM (trainings checkpoint and stop at their next step) before SIGKILL
# The TrainConfig fields that make a recipe (eval_every, workers ... change no weights)
RECIPE = (
    "epochs", "batch_size", "lr", "warmup_epochs", "wd", "momentum", "label_smoothing", "ema", "amp", "device",
    "seed", "limit_train", "val_size", "pad", "flip", "erase",
)  # fmt: skip


class Pipeline:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out, self.t0 = args, Path(args.out).resolve(), time.monotonic()
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self.log = (self.out / "pipeline.log").open("a")
        self.procs: dict[str, subprocess.Popen] = {}
        self.trainings: dict[str, tuple[str, Path]] = {}  # job name -> (arch, run folder), to restart one
        self.status: dict[str, object] = {"device": args.device, "smoke": args.smoke}
        self.failed: list[str] = []  # jobs that exited non-zero or had to be killed: the pipeline exits 1

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def note(self, msg: str) -> None:
        line = f"[{self.elapsed():6.1f}s] {msg}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def start(self, name: str, *cmd: str, threads: int | None = None) -> None:
        self.note(f"start {name}: {' '.join(cmd)}")
        logf = (self.out / "logs" / f"{name}.log").open("a")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "10"}
        threads = threads or self.args.threads
        if threads:  # jobs run side by side: one each on a 2-core CPU beats oversubscribed pairs
            env["OMP_NUM_THREADS"] = str(threads)
        self.procs[name] = subprocess.Popen(
            [sys.executable, *cmd], cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, env=env
        )

    def train(self, name: str, arch: str, out: Path, threads: int | None = None) -> None:
        self.trainings[name] = (arch, out)
        self.start(name, *train_cmd(self, arch, out), threads=threads)

    def wait(self, name: str, deadline: float | None = None) -> bool:
        """Whether the job exited 0; past ``deadline`` it is stopped (see ``stop``)."""
        proc = self.procs[name]
        try:
            timeout = None if deadline is None else max(1.0, deadline - self.elapsed())
            status: object = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = f"stopped at the deadline: {stop({name: proc})[name]}"
        self.status[name] = status
        self.note(f"end {name}: {status}")
        if proc.returncode != 0:
            self.failed.append(name)
        if name in self.trainings and trained(out := self.trainings[name][1]):
            # nothing left to resume; a committed run folder (make fmnist-train-1x) keeps only live checkpoints
            (out / "checkpoint.pt").unlink(missing_ok=True)
        return proc.returncode == 0

    def run(self, name: str, *cmd: str, deadline: float | None = None) -> bool:
        self.start(name, *cmd)
        return self.wait(name, deadline)

    def minutes_left(self, reserve: float) -> float:
        return max(0.5, (self.args.budget - reserve - self.elapsed()) / 60)

    def json_tail(self, name: str) -> dict:
        lines = (self.out / "logs" / f"{name}.log").read_text().strip().splitlines()
        return json.loads(lines[-1]) if lines else {}


def done(path: Path) -> bool:
    return (path / ".done").exists()


def trained(run: Path) -> bool:
    """search/training/train.py writes metrics.json last (after model.safetensors and config.json): then the run is
    done."""
    return (run / "metrics.json").exists()


def stop(procs: dict[str, subprocess.Popen], grace: float = GRACE_S) -> dict[str, str]:
    """SIGTERM the running jobs (trainings checkpoint on it), SIGKILL any still up after ``grace`` seconds, reap
    them all; returns how each ended."""
    running = {name: proc for name, proc in procs.items() if proc.poll() is None}
    for proc in running.values():
        proc.terminate()
    end, how = time.monotonic() + grace, {}
    for name, proc in running.items():
        try:
            how[name] = f"exit {proc.wait(timeout=max(0.0, end - time.monotonic()))} after SIGTERM"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            how[name] = f"killed {grace:.0f} s after SIGTERM"
    return how


def targets_of(args: argparse.Namespace) -> list[str]:
    return [t for t in args.targets.split(",") if t]


def resume_flag(path: Path) -> list[str]:
    return ["--resume"] if (path / "checkpoint.pt").exists() else []


def train_cmd(p: Pipeline, arch: str, out: Path) -> list[str]:
    a = p.args
    cmd = [
        "-m",
        "search",
        "train",
        "--arch",
        arch,
        "--dataset",
        "fashion-mnist",
        "--out",
        str(out),
        "--epochs",
        str(a.train_epochs),
        "--batch-size",
        str(a.batch_size),
        "--device",
        a.device,
        "--seed",
        "0",
        "--no-progress",
        "--time-limit",
        f"{p.minutes_left(a.report_reserve):.2f}",
        *resume_flag(out),
        *shlex.split(a.train_args),
    ]
    if a.device == "cuda":
        cmd += ["--amp", "bf16"]
    if a.smoke:
        cmd += ["--limit-train", "2000", "--val-size", "500"]
    return cmd


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def factor_of(args: argparse.Namespace, name: str) -> float:
    """The target's fraction of the baseline's latency: ``--factor`` for the trained targets, else TARGET_FACTORS."""
    return args.factor if args.factor is not None and name in TRAINED else TARGET_FACTORS[name]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/fmnist")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole pipeline")
    ap.add_argument("--report-reserve", type=float, default=70.0, help="seconds kept for the reports")
    ap.add_argument("--targets", default=",".join(TARGET_FACTORS), help="searches to run (see TARGET_FACTORS)")
    ap.add_argument("--gpu-tables", action="store_true", help="profile and validate GPU tables (torch, batch 8)")
    ap.add_argument("--bench", action="store_true", help="latency reports of the trained nets at the end")
    ap.add_argument(
        "--bundle", action="store_true", help="bundle the four trained nets into zoo/pretrained and make the table"
    )
    ap.add_argument(
        "--archs-from",
        metavar="DIR",
        help="train DIR/<target>/arch.json (e.g. benchmarks/results/fmnist_search_cpu) instead of searching",
    )
    ap.add_argument(
        "--factor",
        type=positive,
        help="target = FACTOR x the baseline's predicted latency for the cpu, mobile and gpu searches "
        f"(default {TARGET_FACTORS['cpu']}; cpu_tight and cpu_loose keep theirs)",
    )
    ap.add_argument(
        "--search-only", action="store_true", help="warm-up and searches only: train nothing (not even the baseline)"
    )
    ap.add_argument("--search-limit-train", type=int, help="class-balanced subset the supernet trains on")
    ap.add_argument("--warmup-args", default="", help="extra `search warmup` options, e.g. '--init-elastic bundled'")
    ap.add_argument("--search-args", default="", help="extra `search run` options, e.g. '--arch-every 2'")
    ap.add_argument("--train-args", default="", help="extra `search train` options (the same for every net)")
    ap.add_argument("--loss", default="mul#ratio", help="search loss (search/gradient/objective.py)")
    ap.add_argument("--reg-lambda", type=float, help="add#linear / add#hinge: weight of the latency term")
    ap.add_argument("--threads", type=int, help="torch threads per job (OMP_NUM_THREADS)")
    ap.add_argument("--warmup-epochs", type=int, default=10)
    ap.add_argument("--search-epochs", type=int, default=15)
    ap.add_argument("--train-epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--pack", action="store_true", help="pack OUT into OUT.tar.gz (and $OUT on the device)")
    ap.add_argument("--smoke", action="store_true", help="tiny settings (a CPU test of the pipeline)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Exit 1 when a stage raised or a job failed (what finished is kept; run again to continue)."""
    args = build_parser().parse_args(argv)
    if args.smoke:  # two search epochs: the first has no alpha step (--arch-skip-epochs 1)
        args.warmup_epochs, args.search_epochs, args.train_epochs = 1, 2, 1
    p = Pipeline(args)
    try:
        stages(p)
    except Exception as e:  # one shot on a lent GPU: keep whatever finished, say what broke
        p.note(f"pipeline error: {e!r}")
        p.status["error"] = repr(e)
    finally:
        for name, how in stop(p.procs).items():
            p.status[name] = f"stopped at the end: {how}"
            p.note(f"end {name}: {p.status[name]}")
            p.failed.append(name)
        p.status["failed"] = p.failed
        (p.out / "status.json").write_text(json.dumps(p.status, indent=1, default=str))
        if args.pack:
            pack(p)
    return 1 if "error" in p.status or p.failed else 0


def stages(p: Pipeline) -> None:
    args = p.args
    tables, search, train, reports = (p.out / d for d in ("tables", "search", "train", "reports"))
    for d in (tables, search, train, reports):
        d.mkdir(exist_ok=True)
    small = ["--limit-train", "2000", "--val-size", "500"] if args.smoke else []
    if args.search_limit_train and not args.smoke:
        small = ["--limit-train", str(args.search_limit_train)]
    gpu_flags = ["--amp", "--channels-last"] if args.device == "cuda" else ["--channels-last"]
    p.note(f"python {sys.version.split()[0]}; cwd {ROOT}")
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "-L"], stdout=p.log, stderr=subprocess.STDOUT, check=False)
    wanted = targets_of(args)
    unknown = set(wanted) - set(TARGET_FACTORS)
    if unknown:
        raise ValueError(f"unknown targets {sorted(unknown)}; known: {', '.join(TARGET_FACTORS)}")
    if args.search_only and args.archs_from:
        raise ValueError("--search-only with --archs-from: nothing to search and nothing to train")

    # Phase 1, in parallel: baseline training, the shared supernet warm-up, the GPU latency tables.
    baseline = train / "fmnist_mobilenetv2"
    if not trained(baseline) and not args.search_only:
        p.train("train_mobilenetv2", BASELINE_ARCH, baseline)
    warm = search / "warmup"
    if args.archs_from:
        take_archs(Path(args.archs_from), search, wanted)
    searched = all((search / name / "arch.json").exists() for name in wanted)
    if not searched and not done(warm):
        p.start(
            "warmup",
            "-m",
            "search",
            "warmup",
            "--space",
            "fmnist",
            "--dataset",
            "fashion-mnist",
            "--out",
            str(warm),
            "--epochs",
            str(args.warmup_epochs),
            "--device",
            args.device,
            "--batch-size",
            str(args.batch_size),
            "--no-progress",
            *resume_flag(warm),
            *gpu_flags,
            *small,
            *shlex.split(args.warmup_args),
            threads=os.cpu_count() if args.search_only else None,  # alone then: no baseline training beside it
        )
    lut = {sp: tables / f"gpu_torch_{sp}_b8.json" for sp in ("fmnist", "imagenet")}
    prof = ["--device", args.device, "--runtime", "torch", "--batch", "8", "--no-progress"]
    if args.smoke:
        prof += ["--budget-s", "0.02", "--warmup-s", "0.01", "--calib-archs", "2", "--calib-budget-s", "0.05"]
    if args.gpu_tables:
        p.run("profile_fmnist", "-m", "search", "profile", "--space", "fmnist", "--out", str(lut["fmnist"]), *prof)
    # the gpu target: this run's table, else the shipped one (measured on a real GPU, see tables/README.md)
    models = {**LATENCY_MODEL, "gpu": str(lut["fmnist"]) if args.gpu_tables else "gpu"}

    # Targets: a fixed fraction of the baseline's predicted latency on each hardware (see factor_of).
    base_arch = p.out / "fmnist_mobilenetv2.arch.json"
    base_arch.write_text(get_space("fmnist").uniform(6, 3, "fmnist_mobilenetv2").to_json())
    base_ms_of: dict[str, float] = {}  # one prediction per latency model (cpu, cpu_tight, cpu_loose share one)
    for model in dict.fromkeys(models[name] for name in wanted):
        job = f"latency_base_{Path(model).stem}"
        if p.run(job, "-m", "search", "latency", str(base_arch), "--lut", model, "--json"):
            base_ms_of[model] = p.json_tail(job)["total"]
    targets = {}
    for name in wanted:
        model = models[name]
        if model in base_ms_of:
            base_ms, factor = base_ms_of[model], factor_of(args, name)
            targets[name] = {
                "model": model,
                "baseline_ms": base_ms,
                "factor": factor,
                "target_ms": round(base_ms * factor, 4),
            }
    p.status["targets"] = targets
    record = p.out / "targets.json"
    before = json.loads(record.read_text()) if record.exists() else {}
    moved = [
        name
        for name, t in targets.items()
        if name in before and before[name]["target_ms"] != t["target_ms"] and (search / name).exists()
    ]
    if moved and not args.archs_from:  # a resumed search must keep its target
        raise ValueError(f"{', '.join(moved)} searched before with other targets ({record}); use another --out")
    record.write_text(json.dumps({**before, **targets}, indent=1))

    # The imagenet GPU table and both validations run while the warm-up finishes.
    if args.gpu_tables:
        p.start(
            "profile_imagenet", "-m", "search", "profile", "--space", "imagenet", "--out", str(lut["imagenet"]), *prof
        )
    if "warmup" in p.procs and p.wait("warmup"):
        (warm / ".done").touch()
    if not searched and not done(warm):
        raise ValueError("the supernet warm-up did not finish; run again to resume it")

    # Phase 2: the searches from the shared warm-up, in parallel; each trained as soon as it is derived.
    for name, t in targets.items():
        if (search / name / "arch.json").exists():
            continue
        p.start(
            f"search_{name}",
            "-m",
            "search",
            "run",
            "--space",
            "fmnist",
            "--dataset",
            "fashion-mnist",
            "--target",
            t["model"],
            "--target-latency",
            str(t["target_ms"]),
            "--loss",
            args.loss,
            *(["--reg-lambda", str(args.reg_lambda)] if args.reg_lambda is not None else []),
            "--init-from",
            str(warm / "checkpoint.pt"),
            "--epochs",
            str(args.search_epochs),
            "--device",
            args.device,
            "--batch-size",
            str(args.batch_size),
            "--out",
            str(search / name),
            "--no-progress",
            "--no-tensorboard",
            *resume_flag(search / name),
            *gpu_flags,
            *small,
            *shlex.split(args.search_args),
        )
    if args.gpu_tables:
        p.wait("profile_imagenet")
        for sp, table in lut.items():
            p.start(
                f"validate_{sp}",
                "-m",
                "search",
                "validate-lut",
                "--lut",
                str(table),
                "--archs",
                "20",
                "--json",
                "--no-progress",
                *(["--archs", "3", "--budget-s", "0.05", "--rounds", "1"] if args.smoke else []),
            )
    for name in targets:
        if f"search_{name}" in p.procs:
            p.wait(f"search_{name}")
        out = train / f"fmnist_proxyless_{name}"
        if name in TRAINED and (search / name / "arch.json").exists() and not trained(out) and not args.search_only:
            p.train(f"train_{name}", str(search / name / "arch.json"), out)
    if not args.archs_from:
        compare_searches(p, [search / name for name in targets if (search / name / "arch.json").exists()])
    if args.gpu_tables:
        for sp in lut:
            p.wait(f"validate_{sp}")

    # Phase 3: trainings end (their --time-limit leaves the report reserve), then the reports.
    finish_trainings(p, deadline=args.budget - args.report_reserve + 30)
    if args.bundle:
        bundle(p, train, search, wanted)
    if not args.bench:
        return
    finished = [str(d) for d in sorted(train.iterdir()) if trained(d)]
    bench = [
        "-m",
        "export",
        "bench",
        *finished,
        "proxyless_mobile",
        "--random-weights",
        "--device",
        args.device,
        "--runtimes",
        "torch,torchscript,onnxruntime",
        "--batches",
        "1,8,32",
        "--out",
        str(reports / "bench"),
        "--force",  # a rerun of the pipeline replaces the last report
        "--no-progress",
    ]
    if args.smoke:
        bench += ["--iters", "3", "--warmup", "1", "--rounds", "1", "--batches", "1"]
    p.run("bench", *bench, deadline=args.budget + 60)


def compare_searches(p: Pipeline, runs: list[Path]) -> None:
    """search/compare.json: the derived nets on each other's tables and how many layers each pair differs in."""
    if len(runs) < 2:
        return
    out = runs[0].parent / "compare.json"
    if not p.run("compare_searches", "-m", "search", "compare", *map(str, runs), "--out", str(out)):
        raise ValueError("comparing the searches failed (see logs/compare_searches.log)")
    for pair in json.loads(out.read_text())["pairs"]:
        p.note(f"{pair['a']} and {pair['b']} differ in {pair['differing_layers']} layers")


def take_archs(source: Path, search: Path, wanted: list[str]) -> None:
    """Copy SOURCE/<target>/arch.json into this run's search folders: those nets are trained, nothing searched."""
    for name in wanted:
        arch, dest = source / name / "arch.json", search / name / "arch.json"
        if not arch.is_file():
            raise ValueError(f"--archs-from {source}: no {name}/arch.json there")
        if dest.exists() and dest.read_bytes() != arch.read_bytes():
            raise ValueError(f"{dest} differs from {arch}: use another --out")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(arch, dest)


def finish_trainings(p: Pipeline, deadline: float, poll_s: float = 5.0) -> None:
    """Wait for every training (stopped at ``deadline``); the last one still running is resumed on every core."""
    left = list(p.trainings)
    while left:
        alive = [name for name in left if p.procs[name].poll() is None]
        if len(alive) <= 1 or p.elapsed() >= deadline:
            if len(alive) == 1 and deadline - p.elapsed() > REGAIN_MIN_S:
                regain_cores(p, alive[0])
            for name in left:
                p.wait(name, deadline=deadline)
            return
        for name in [n for n in left if n not in alive]:
            p.wait(name)
            left.remove(name)
        time.sleep(poll_s)


def regain_cores(p: Pipeline, name: str) -> None:
    """A training left alone on a CPU with 1-thread jobs: stop it (SIGTERM checkpoints it) and resume it on
    every core."""
    cores, proc = os.cpu_count() or 1, p.procs[name]
    arch, out = p.trainings[name]
    if not p.args.threads or p.args.threads >= cores or proc.poll() is not None:
        return
    p.note(f"{name}: the other jobs are done; resuming it on {cores} threads")
    proc.terminate()
    proc.wait()
    if trained(out):  # it finished as it was told to stop
        return
    p.train(name, arch, out, threads=cores)


def bundle(p: Pipeline, train: Path, search: Path, wanted: list[str]) -> None:
    """Once the baseline and the requested targets' nets are trained: measure and bundle each into zoo/pretrained,
    then the specialization table."""
    runs = {"fmnist_mobilenetv2": (train / "fmnist_mobilenetv2", None)}
    runs |= {f"fmnist_proxyless_{t}": (train / f"fmnist_proxyless_{t}", search / t) for t in TRAINED if t in wanted}
    missing = [name for name, (run, _) in runs.items() if not trained(run)]
    if missing:
        p.note(f"not bundling: {', '.join(missing)} not trained yet (run the same command again to continue)")
        return
    note = recipe_note({name: run for name, (run, _) in runs.items()})
    # a smoke run bundles into OUT, not into the zoo
    dest = p.out / "pretrained" if p.args.smoke else ROOT / "zoo" / "pretrained"
    table = p.out / "specialization" if p.args.smoke else ROOT / "benchmarks" / "results" / "specialization"
    for name, (run, search_run) in runs.items():
        cmd = ["scripts/bundle_fmnist.py", name, str(run), "--note", note, "--dest", str(dest / name)]
        if search_run is not None:
            cmd += ["--search-run", str(search_run)]
        if not p.run(f"bundle_{name}", *cmd):
            raise ValueError(f"bundling {name} failed (see logs/bundle_{name}.log)")
    nets = [str(dest / name) for name in runs]
    quick = ["--rounds", "1", "--iters", "3"] if p.args.smoke else []
    readme = [] if p.args.smoke else ["--readme", str(RESULTS_PAGE)]
    if not p.run("specialization", "scripts/specialization.py", *nets, "--out", str(table), *quick, *readme):
        raise ValueError("the specialization table failed (see logs/specialization.log)")
    if not p.args.smoke and not p.run("results_tables", "scripts/results_tables.py"):
        raise ValueError("the results tables failed (see logs/results_tables.log)")


def recipe_note(runs: dict[str, Path]) -> str:
    """The recipe each net trained with, from its own log.json (a resumed run may have been started with other
    flags than this command's); names the fields where the nets differ."""
    configs = {name: json.loads((run / "log.json").read_text())["config"] for name, run in runs.items()}
    first = next(iter(configs.values()))
    differ = [k for k in RECIPE if any(c.get(k) != first.get(k) for c in configs.values())]
    shared = ", ".join(f"{k}={first.get(k)}" for k in RECIPE if k not in differ)
    if not differ:
        return f"one recipe for all {len(configs)} nets (their log.json): {shared}"
    each = "; ".join(f"{name}: " + ", ".join(f"{k}={c.get(k)}" for k in differ) for name, c in configs.items())
    return f"the nets' recipes differ (their log.json): {each}; the same for all: {shared}"


def pack(p: Pipeline) -> None:
    """OUT.tar.gz without the large supernet checkpoints, except the warm-up's while a search still needs it;
    trainings keep theirs to resume."""
    p.note("packing")
    searched = all((p.out / "search" / t / "arch.json").exists() for t in targets_of(p.args))
    for ckpt in p.out.rglob("checkpoint.pt"):
        parts = ckpt.relative_to(p.out).parts
        if parts[0] == "search" and (parts[1] != "warmup" or searched):
            ckpt.unlink()
    with tarfile.open(f"{p.out}.tar.gz", "w:gz") as tar:
        tar.add(p.out, arcname=p.out.name)
    if os.environ.get("OUT"):
        shutil.copy(f"{p.out}.tar.gz", Path(os.environ["OUT"]) / "gpu_results.tar.gz")
    p.note("done")


if __name__ == "__main__":
    sys.exit(main())
