"""Safe file writes for every package.

``atomic_output``: a reader sees the old file or the new one, never half of one; a folder that cannot be written
(read-only, full, missing permissions) is one ``OutputError`` line naming the folder and the cause.
``write_checksummed`` / ``verify_checksum``: a checkpoint with a sha256 beside it, so a flipped byte is refused
on resume instead of silently continuing from corrupt state.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

CHECKSUM_SUFFIX = ".sha256"


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
