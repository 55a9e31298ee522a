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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from zoo.registry import build_network, get_model_info
from zoo.weights import WeightsError, assign_state_dict, save_pretrained, sha256_file

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an authors'-style checkpoint (``{'state_dict': sd}`` or a bare sd), 'module.' stripped."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
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
    state = read_checkpoint(checkpoint)
    model = build_network(info.arch)
    # PyTorch < 0.4.1 saved no BatchNorm ``num_batches_tracked``; it only matters when training with momentum=None.
    counters = [k for k in model.state_dict() if k.endswith("num_batches_tracked")]
    assign_state_dict(model, state, str(checkpoint), optional=counters)
    digest = sha256_file(checkpoint)
    source = (
        f"authors' checkpoint {Path(checkpoint).name} (sha256 {digest}) imported with `proxyless zoo import-official`; "
        f"arch and metrics as published ({info.source})"
    )
    return save_pretrained(model, out_dir, replace(info, source=source), dtype=dtype)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "import-official",
        help="convert an authors' .pth checkpoint to a safetensors weights directory",
        description="Convert an authors' checkpoint ({'state_dict': ...}, read with weights_only=True) into "
        "model.safetensors + config.json; then create_model(ARCH, pretrained=OUT).",
    )
    p.add_argument("checkpoint", type=Path, help="the authors' .pth / .pth.tar file")
    p.add_argument("--arch", required=True, help="registered arch name (see `proxyless zoo list`)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--fp16", action="store_true", help="store weights as float16 (half the size)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    out = import_official(args.arch, args.checkpoint, args.out, torch.float16 if args.fp16 else None)
    config = json.loads((out / "config.json").read_text())
    print(f"wrote {out}: {args.arch} weights; load with create_model({args.arch!r}, pretrained={str(out)!r})")
    print(json.dumps({"arch": args.arch, "out": str(out), "weights_sha256": config["weights_sha256"]}))
    return 0
