"""zoo.files: atomic writes leave the old file on failure, no temporary behind, and the umask's permissions;
checksummed checkpoints refuse a flipped byte; a full or read-only folder is one line; an output folder is
refused when used (unless forced), when another writer holds it, and a killed writer leaves nothing that loads."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import zoo.files
from zoo.files import (
    ChecksumError,
    OutputError,
    atomic_output,
    atomic_write,
    checksum_path,
    output_folder,
    sha256_of,
    verify_checksum,
    write_checksummed,
)


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = atomic_write(tmp_path / "a.json", "old\n")
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_files_get_the_umask_permissions_not_mkstemps_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "sub" / "w.bin", b"\x00\x01")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_writer_that_renames_its_own_temp_file_still_gets_them(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "model.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))  # safetensors writes a 0600 temp file and renames it
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == 0o644


def test_a_checkpoint_with_a_flipped_byte_is_refused(tmp_path: Path) -> None:
    path = write_checksummed(tmp_path / "checkpoint.pt", lambda f: f.write(b"state " * 100))
    assert verify_checksum(path) is True
    assert checksum_path(path).read_text().split() == [sha256_of(path), "checkpoint.pt"]  # sha256sum's format
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"checkpoint\.pt: sha256 .* does not match checkpoint\.pt\.sha256"):
        verify_checksum(path)
    checksum_path(path).unlink()  # written before checksums were kept: nothing to check against
    assert verify_checksum(path) is False


def test_a_kill_between_the_two_renames_leaves_a_pair_that_verifies(tmp_path: Path, monkeypatch) -> None:
    path = write_checksummed(tmp_path / "checkpoint.pt", lambda f: f.write(b"old"))
    real_write = zoo.files.atomic_write
    calls = []

    def killed_after_the_checkpoint_rename(target: Path, data: str | bytes) -> Path:
        calls.append(target)
        if len(calls) == 2:  # the final sidecar, written after the checkpoint is in place
            raise KeyboardInterrupt
        return real_write(target, data)

    monkeypatch.setattr(zoo.files, "atomic_write", killed_after_the_checkpoint_rename)
    with pytest.raises(KeyboardInterrupt):
        write_checksummed(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new" and verify_checksum(path)


@pytest.mark.parametrize("errno_", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_folder_is_one_line_and_the_last_checkpoint_stays(tmp_path: Path, errno_: int) -> None:
    path = write_checksummed(tmp_path / "checkpoint.pt", lambda f: f.write(b"good"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fails(f: object) -> None:
        raise OSError(errno_, os.strerror(errno_))

    with pytest.raises(OutputError) as caught:
        write_checksummed(path, fails)
    assert str(caught.value) == f"cannot write checkpoint.pt in {tmp_path}: {os.strerror(errno_)}"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before and verify_checksum(path)


def test_a_failed_sidecar_write_names_the_sidecar_once(tmp_path: Path, monkeypatch) -> None:
    path = write_checksummed(tmp_path / "checkpoint.pt", lambda f: f.write(b"good"))

    def full(target: Path, data: str | bytes) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputError) as caught:
        write_checksummed(path, lambda f: f.write(b"new"))
    assert str(caught.value) == f"cannot write checkpoint.pt.sha256 in {tmp_path}: No space left on device"
    monkeypatch.undo()
    assert path.read_bytes() == b"good" and verify_checksum(path)


def _fill(folder: Path, text: str) -> None:
    (folder / "config.json").write_text(text)
    atomic_write(folder / "model.safetensors", text)


def _beside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_a_used_folder_is_refused_untouched_and_force_replaces_it(tmp_path: Path) -> None:
    out = tmp_path / "net"
    out.mkdir()
    (out / "config.json").write_text("the user's")
    with pytest.raises(OutputError) as caught, output_folder(out) as tmp:
        _fill(tmp, "ours")  # never reached: refused before the block runs
    assert str(caught.value) == (
        f"--out {out}: exists and is not an empty folder (holds config.json); choose another or pass --force"
    )
    assert _used_names(out) == {"config.json": "the user's"} and _beside(out) == ["net"]
    with output_folder(out, force=True) as tmp:
        _fill(tmp, "ours")
        assert _used_names(out) == {"config.json": "the user's"}  # replaced only at the end
    assert _used_names(out) == {"config.json": "ours", "model.safetensors": "ours"} and _beside(out) == ["net"]


def _used_names(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_a_failed_writer_leaves_no_folder_and_an_empty_one_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "net"
    with pytest.raises(RuntimeError), output_folder(out) as tmp:
        _fill(tmp, "half")
        raise RuntimeError("crash mid-write")
    assert not out.exists() and _beside(out) == []
    out.mkdir()
    with output_folder(out) as tmp:
        _fill(tmp, "ours")
    assert _used_names(out)["config.json"] == "ours"
    with pytest.raises(OutputError, match="is not a folder"), output_folder(out / "config.json"):
        pass


def test_a_second_concurrent_writer_is_refused_in_one_line_and_the_first_finishes(tmp_path: Path) -> None:
    out = tmp_path / "net"
    started, go = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with output_folder(out) as tmp:
                started.set()
                go.wait(60)
                _fill(tmp, "first")
        except BaseException as e:  # reported by the assertion below
            errors.append(e)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(60)
    try:
        with pytest.raises(OutputError) as caught, output_folder(out, force=True) as tmp:
            _fill(tmp, "second")
    finally:
        go.set()
        thread.join(60)
    assert (
        str(caught.value)
        == f"--out {out}: another run is writing this folder now; wait for it to finish or choose another"
    )
    assert errors == [] and _used_names(out) == {"config.json": "first", "model.safetensors": "first"}
    assert _beside(out) == ["net"]  # the lock file went with its writer


KILLED_WRITER = """
import sys, time
from pathlib import Path
from zoo.files import output_folder
with output_folder(sys.argv[1]) as tmp:
    (tmp / "config.json").write_text("half")
    Path(sys.argv[2]).touch()
    time.sleep(600)
"""


def test_a_sigkilled_writer_leaves_nothing_a_rerun_trips_on(tmp_path: Path) -> None:
    out, ready = tmp_path / "net", tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists()  # no folder that loads as finished
    assert [n for n in _beside(out) if n != "ready"] == [".net.proxyless-lock", *_leftover_tmp(out)]
    with output_folder(out) as tmp:
        _fill(tmp, "rerun")
    assert _used_names(out)["config.json"] == "rerun" and _beside(out) == ["net", "ready"]


def _leftover_tmp(out: Path) -> list[str]:
    names = [n for n in _beside(out) if n.startswith(".net.proxyless-tmp-")]
    assert len(names) == 1
    return names
