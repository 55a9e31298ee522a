"""One call of the device tool on a GPU machine: ``make TARGET`` for at most GPU_MIN minutes of training, resumed
from the state the previous call brought back; the new state and the log are left in $OUT for the next call.

    make gpu-data                                    # here, once: the IDX files into .carry/ (none there)
    python3 scripts/gpu_session.py run gpu-fmnist-supernet  # there: one device call, carrying .carry
    python scripts/gpu_session.py keep FILES_AT      # here: the state into .carry/, its files into the tree

Why: a device call lasts 10 minutes at most and every machine starts bare, so a training longer than one call lives
in one checksummed archive that comes back ($OUT returns at most 8 files of 16 MiB each). The archive holds the
target's run folders (no TensorBoard events) and results folder, paths relative to the repository root. The last
line printed is JSON. Details: docs/make-targets.md#a-call-on-a-gpu-machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoo.files import ChecksumError, checksum_path, verify_checksum, write_checksummed

CARRY = Path(".carry")  # git-ignored; the device call carries it
MAX_BACK = 16 * 2**20  # the largest file a device call brings back


@dataclass(frozen=True)
class GpuTarget:
    """What a ``gpu-*`` make target needs from one call to the next: Makefile variables naming its folders, and
    the files in them that the next call can do without."""

    folders: tuple[str, ...]  # each a Makefile expression, e.g. "$(GPU_RUNS)/gpu-fmnist-supernet"
    skip: tuple[str, ...] = ()  # file-name patterns left out of the state besides tb/


TARGETS = {
    "gpu-fmnist-supernet": GpuTarget(("$(GPU_RUNS)/gpu-fmnist-supernet",)),
    # a finished subnet counts by its row in R40/standalone.csv: only the running one's checkpoint is needed
    "gpu-elastic-ranking": GpuTarget(("$(GPU_RUNS)/elastic_ranking_40ep", "$(R40)"), skip=("*.safetensors",)),
}


def make_value(expression: str) -> str:
    """A Makefile expression as make expands it here (variables from the environment or their defaults)."""
    rule = f"gpu-session-value: ; @echo {expression}"
    cmd = ["make", "-s", "--no-print-directory", f"--eval={rule}", "gpu-session-value"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def folders(target: str) -> list[Path]:
    paths = [Path(make_value(f)) for f in TARGETS[target].folders]
    for p in paths:
        if p.is_absolute() or ".." in p.parts:
            raise SystemExit(f"error: {p} must be a path inside the repository (the state archive is relative)")
    return paths


def unpack(archive: Path) -> None:
    """Extract a state archive after checking its checksum; the data filter refuses links and paths outside."""
    try:
        recorded = verify_checksum(archive)  # False: no .sha256 beside it
    except ChecksumError:
        recorded = False
    if not recorded:
        raise SystemExit(f"error: {archive} does not match its .sha256 (a broken transfer?); not extracted")
    with tarfile.open(archive) as tar:
        tar.extractall(".", filter="data")


def pack(target: str, dest: Path) -> int:
    """The target's folders as ``dest`` (gzip tar, TensorBoard events and the skipped patterns left out) beside its
    .sha256; returns its size."""
    skip = TARGETS[target].skip

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if "tb" in parts or any(Path(info.name).match(p) for p in skip):
            return None
        return info

    def write(f: BinaryIO) -> None:
        with tarfile.open(fileobj=f, mode="w:gz") as tar:
            for folder in folders(target):
                if folder.exists():
                    tar.add(str(folder), filter=keep)

    return write_checksummed(dest, write).stat().st_size


def run(target: str) -> int:
    """``make TARGET`` resumed from .carry/TARGET.tar.gz; the log and the new state into $OUT."""
    out = Path(os.environ.get("OUT") or "")
    if not os.environ.get("OUT") or not out.is_dir():
        raise SystemExit("error: $OUT must name an existing folder (the device call's files that come back)")
    data = Path(os.environ.setdefault("PROXYLESS_FMNIST_DIR", str(CARRY / "fashion-mnist")))
    if not list(data.glob("train-images-idx3-ubyte*")):
        raise SystemExit(f"error: no Fashion-MNIST IDX files in {data}: run `make gpu-data` here and carry .carry")
    folders(target)  # a path outside the tree is refused before the training, not after it
    state = CARRY / f"{target}.tar.gz"
    if state.is_file():
        unpack(state)
    os.environ["PYTHONUNBUFFERED"] = "1"
    started = time.monotonic()
    with (out / f"{target}.log").open("w") as log:
        proc = subprocess.Popen(["make", target], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        rc = proc.wait()
    size = pack(target, out / f"{target}.tar.gz")
    summary = {"target": target, "rc": rc, "seconds": round(time.monotonic() - started, 1), "state_bytes": size}
    if size > MAX_BACK:
        print(f"warning: the state ({size} bytes) is over the {MAX_BACK} bytes a call brings back", file=sys.stderr)
    print(json.dumps(summary))
    return rc


def keep(files_at: Path) -> int:
    """A device call's state archives (checked) into .carry/ for the next call, and extracted into this tree."""
    kept = []
    for archive in sorted(files_at.glob("*.tar.gz")):
        if archive.name.removesuffix(".tar.gz") not in TARGETS:
            continue
        unpack(archive)
        CARRY.mkdir(exist_ok=True)
        for f in (archive, checksum_path(archive)):
            shutil.copy2(f, CARRY / f.name)
        kept.append(archive.name)
    if not kept:
        raise SystemExit(f"error: {files_at} holds no state archive of {', '.join(TARGETS)}")
    print(json.dumps({"kept": kept}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    sub.add_parser("run", help="on the GPU machine: make TARGET, resumed").add_argument("target", choices=TARGETS)
    sub.add_parser("keep", help="here: keep a call's state").add_argument("files_at", type=Path)
    args = ap.parse_args()
    return run(args.target) if args.verb == "run" else keep(args.files_at)


if __name__ == "__main__":
    raise SystemExit(main())
