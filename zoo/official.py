"""``proxyless zoo import-official``: an authors' PyTorch checkpoint -> a safetensors weights directory.

The authors publish ``{'state_dict': ...}`` pickles. They are read with ``torch.load(weights_only=True)``, which
refuses any object but tensors and plain containers, so a tampered pickle runs nothing; the state_dict must then
match the named arch exactly (names and shapes) before anything is written.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import zipfile
from dataclasses import MISSING, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from zoo.files import output_folder
from zoo.options import add_options, option
from zoo.registry import build_network, get_model_info
from zoo.weights import WeightsError, assign_state_dict, save_pretrained, sha256_file

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
# What a checkpoint may hold beyond its float32 state_dict: float64 copies, optimizer-free pickle overhead.
SIZE_FACTOR, SIZE_SLACK = 2, 16 * 2**20


def declared_bytes(path: Path) -> int:
    """The bytes reading ``path`` would produce: a zip archive's (the current torch.save format) declared
    uncompressed sizes, read from its directory without decompressing anything; else the file's size."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist())
    return path.stat().st_size


def read_checkpoint(path: str | Path, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """The tensors of an authors'-style checkpoint (``{'state_dict': sd}`` or a bare sd), 'module.' stripped.
    With ``max_bytes``, a file that declares more (a zip bomb, or another net's checkpoint) is refused unread."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such file")
    if not path.is_file():
        raise WeightsError(f"{path}: not a regular file (a device, FIFO or folder cannot be a checkpoint)")
    if max_bytes is not None:
        try:
            declared = declared_bytes(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
        if declared > max_bytes:
            raise WeightsError(
                f"{path}: declares {declared / 2**20:,.1f} MiB of data, over the {max_bytes / 2**20:,.1f} MiB its "
                "arch can need; refused before decompressing it"
            )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _GLOBAL_RE.search(str(e))
        what = f" (it references {found[1]})" if found else ""
        raise WeightsError(
            f"{path}: refused: the pickle holds objects other than tensors{what}; nothing from it was run"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({str(e).splitlines()[0]})") from None
    state: Any = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected {{'state_dict': {{name: tensor}}}} or {{name: tensor}}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def import_official(arch: str, checkpoint: str | Path, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Check ``checkpoint`` against registered ``arch`` and write it as ``out_dir`` (safetensors + config.json)."""
    info = get_model_info(arch)
    model = build_network(info.arch)
    expected = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    state = read_checkpoint(checkpoint, max_bytes=SIZE_FACTOR * expected + SIZE_SLACK)
    # PyTorch < 0.4.1 saved no BatchNorm ``num_batches_tracked``; it only matters when training with momentum=None.
    counters = [k for k in model.state_dict() if k.endswith("num_batches_tracked")]
    assign_state_dict(model, state, str(checkpoint), optional=counters)
    digest = sha256_file(checkpoint)
    source = (
        f"authors' checkpoint {Path(checkpoint).name} (sha256 {digest}) imported with `proxyless zoo import-official`; "
        f"arch and metrics as published ({info.source})"
    )
    return save_pretrained(model, out_dir, replace(info, source=source), dtype=dtype)


@dataclass(frozen=True)
class ImportOptions:
    """``proxyless zoo import-official``."""

    checkpoint: Path = option(MISSING, "the authors' .pth / .pth.tar file", positional=True)
    arch: str = option(MISSING, "registered arch name (see `proxyless zoo list`)")
    out: Path = option(MISSING, "output directory (new or empty)")
    force: bool = option(False, "replace a non-empty --out", switch=True)
    fp16: bool = option(False, "store weights as float16 (half the size)", switch=True)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "import-official",
        help="convert an authors' .pth checkpoint to a safetensors weights directory",
        description="Convert an authors' checkpoint ({'state_dict': ...}, read with weights_only=True) into "
        "model.safetensors + config.json; then create_model(ARCH, pretrained=OUT).",
    )
    add_options(p, ImportOptions)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    with output_folder(args.out, force=args.force) as tmp:
        import_official(args.arch, args.checkpoint, tmp, torch.float16 if args.fp16 else None)
    out = args.out
    config = json.loads((out / "config.json").read_text())
    print(f"wrote {out}: {args.arch} weights; load with create_model({args.arch!r}, pretrained={str(out)!r})")
    print(json.dumps({"arch": args.arch, "out": str(out), "weights_sha256": config["weights_sha256"]}))
    return 0
