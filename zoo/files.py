"""Safe file writes for every package.

``atomic_output``: a reader sees the old file or the new one, never half of one; a folder that cannot be written
(read-only, full, missing permissions) is one ``OutputError`` line naming the folder and the cause.
``write_checksummed`` / ``verify_checksum``: a checkpoint with a sha256 beside it, so a flipped byte is refused
on resume instead of silently continuing from corrupt state.
``output_folder``: every command that writes a folder (``--out``) refuses a used one unless forced, writes into a
temp folder beside it and renames it into place at the end, and refuses a second writer of the same folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHECKSUM_SUFFIX = ".sha256"
OURS = ".proxyless-"  # the mark of the temp folders and the lock beside an output folder: ``.NAME.proxyless-tmp-*``
LOCK_TRIES = 5


class OutputError(OSError):
    """A file that cannot be written; the message is one line naming the folder and the cause. An OSError, so
    every CLI that reports an unwritable folder in one line already reports this one."""


class ChecksumError(ValueError):
    """A file that does not match the sha256 recorded beside it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def describe_os_error(e: OSError) -> str:
    """``[Errno 28] No space left on device: '/x/y'`` -> ``No space left on device`` (the cause alone)."""
    return e.strerror or (str(e).splitlines() or [type(e).__name__])[0]


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix: some writers insist on it) and rename it over ``path``
    when the block succeeds; on failure the temporary file is removed and ``path`` is untouched. The file gets
    the usual permissions (0666 less the umask), not mkstemp's 0600: weights and artefacts are meant to be shared.
    An OSError (read-only or full folder) becomes an ``OutputError`` naming the folder.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        # after the writer: some (safetensors) write their own temp file and rename it over ours
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OutputError:  # a nested write (a checkpoint's sha256) already named its file
        raise
    except OSError as e:
        raise OutputError(f"cannot write {path.name} in {path.parent}: {describe_os_error(e)}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # gone after a successful rename


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def sha256_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checksum_path(path: str | os.PathLike[str]) -> Path:
    return Path(f"{path}{CHECKSUM_SUFFIX}")


def _checksum_lines(digests: list[str], name: str) -> str:
    return "".join(f"{d}  {name}\n" for d in dict.fromkeys(digests))  # the format of `sha256sum`


def write_checksummed(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` atomically through ``write(file)`` and record its sha256 in ``path.sha256``.

    The sidecar lists the old and the new digest while the new file is renamed into place, then the new one
    alone, so a process killed between the two renames still leaves a pair that verifies."""
    path = Path(path)
    sidecar = checksum_path(path)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:  # a Python file: a full disk is an OSError, not a C++ RuntimeError
            write(f)
        new = sha256_of(tmp)
        old = [line.split()[0] for line in _sidecar_lines(sidecar)] if path.is_file() else []
        atomic_write(sidecar, _checksum_lines([*old, new], path.name))
    atomic_write(sidecar, _checksum_lines([new], path.name))
    return path


def _sidecar_lines(sidecar: Path) -> list[str]:
    try:
        return [line for line in sidecar.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return []


def verify_checksum(path: str | os.PathLike[str]) -> bool:
    """Refuse (``ChecksumError``) a file whose sha256 is not the one recorded beside it; False when nothing was
    recorded (a file written before checksums were kept), True when it matches."""
    path = Path(path)
    sidecar = checksum_path(path)
    if not sidecar.exists():
        return False
    recorded = {line.split()[0] for line in _sidecar_lines(sidecar)}
    actual = sha256_of(path)
    if actual not in recorded:
        raise ChecksumError(
            f"{path}: sha256 {actual[:12]}… does not match {sidecar.name}: the checkpoint is corrupt or was changed; "
            "restore it or start a new run"
        )
    return True


def _used(path: Path) -> list[str]:
    """The names in ``path`` (hidden ones too: ``ls`` may show nothing), none if it is absent."""
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


@dataclass(frozen=True)
class _Target:
    """An output folder: ``path`` absolute (``.`` has a name and a parent), ``label`` as the user wrote it."""

    path: Path
    label: str
    flag: str

    def error(self, why: str) -> OutputError:
        return OutputError(f"{self.flag} {self.label}: {why}")

    @contextmanager
    def os_errors(self) -> Iterator[None]:
        """Our own steps' OSErrors as one line naming the folder (the caller's block is left alone)."""
        try:
            yield
        except OutputError:
            raise
        except OSError as e:
            raise self.error(f"cannot write the folder: {describe_os_error(e)}") from None


def _refuse_used(target: _Target, force: bool) -> None:
    path = target.path
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise target.error("exists and is not a folder; choose another")
    names = _used(path)
    if names and not force:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise target.error(f"exists and is not an empty folder (holds {shown}); choose another or pass --force")


def _try_lock(lock: Path) -> int | None:
    """An fd holding ``flock`` on ``lock``, or None while another writer holds it. The kernel drops the lock
    when its holder dies (SIGKILL included), so a leftover lock file never blocks a rerun. A lock file unlinked
    by a finishing writer between our open and our lock is not the live one: tried again."""
    for _ in range(LOCK_TRIES):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    return None


@contextmanager
def _folder_lock(target: _Target) -> Iterator[None]:
    lock = target.path.parent / f".{target.path.name}{OURS}lock"
    with target.os_errors():
        target.path.parent.mkdir(parents=True, exist_ok=True)
        fd = _try_lock(lock)
    if fd is None:
        raise target.error("another run is writing this folder now; wait for it to finish or choose another")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held: the next writer checks that it locked the live file
        os.close(fd)


def _remove_stale(path: Path) -> None:
    """Temp folders beside ``path`` left by a killed writer: ours by name, stale since we hold the lock."""
    prefix = f".{path.name}{OURS}"
    for p in path.parent.iterdir():
        if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def _move_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished ``tmp`` to ``path``; a used ``path`` (``--force``) is renamed aside first, then removed."""
    os.chmod(tmp, 0o777 & ~_umask())
    if _used(path):
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}{OURS}old-", dir=path.parent))
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)  # absent, or an empty folder: rename(2) replaces an empty directory


@contextmanager
def output_folder(path: str | os.PathLike[str], *, force: bool = False, flag: str = "--out") -> Iterator[Path]:
    """Claim the output folder ``path`` before any expensive work and yield a temp folder beside it to fill; it
    becomes ``path`` when the block succeeds, and is removed when the block fails.

    Refused in one ``OutputError`` line naming ``flag`` and the folder: a file, a non-empty folder (unless
    ``force``: it is replaced at the end), a folder another writer holds (an ``flock`` beside it). A killed writer
    leaves only ``.NAME.proxyless-*`` beside the folder, never a folder that loads as finished; the next writer
    removes them."""
    target = _Target(Path(os.path.abspath(path)), str(path), flag)
    _refuse_used(target, force)
    with _folder_lock(target):
        _refuse_used(target, force)  # again under the lock: another writer may just have finished
        with target.os_errors():
            _remove_stale(target.path)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.path.name}{OURS}tmp-", dir=target.path.parent))
        try:
            yield tmp
            with target.os_errors():
                _move_into_place(tmp, target.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone after a successful rename
