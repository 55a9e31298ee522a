"""Weights on disk: ``model.safetensors`` + ``config.json`` (arch spec, metadata, sha256 of the weights).

Loading never unpickles anything: weights are safetensors, checked against the sha256 in their config (or the
registry's pinned one) and against the network's state_dict names and shapes before a single value is copied.
A source is a local directory, a ``.safetensors`` file, or ``hf-hub:ORG/REPO[@REVISION]`` (fetched with
``huggingface_hub.hf_hub_download``, which caches; ``HF_HUB_OFFLINE=1`` means cache only).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.files import atomic_output, atomic_write

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HUB_PREFIX = "hf-hub:"
HEAD_PREFIX = "classifier."
METADATA_KEYS = ("dataset", "input_size", "mean", "std", "categories", "source", "metrics")
# Spec fields that do not change what trained weights compute (a new head is checked by shapes instead).
_ARCH_FIELDS_IGNORED = frozenset({"name", "num_classes", "dropout", "bn_momentum", "extra"})
_HUB_RE = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_CONFIG_BYTES = 4 * 2**20  # a config.json is a few KB; a bigger one is not read into memory


class WeightsError(ValueError):
    """Weights that are missing, corrupt, unsafe or for another network; the message is one line."""


@dataclass(frozen=True)
class WeightsRef:
    """Where a model's weights live: a Hub repo (at a revision) or a local directory / file, plus their sha256."""

    sha256: str
    repo_id: str | None = None
    revision: str | None = None
    local_path: str | None = None

    def __post_init__(self) -> None:
        if not _SHA_RE.match(self.sha256):
            raise WeightsError(f"weights sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if (self.repo_id is None) == (self.local_path is None):
            raise WeightsError("weights need exactly one of repo_id (Hugging Face Hub) or local_path")

    @classmethod
    def local(cls, path: str | Path, sha256: str) -> WeightsRef:
        return cls(sha256, local_path=str(path))

    @property
    def source(self) -> str:
        """The string ``load_pretrained`` takes."""
        if self.repo_id is None:
            return str(self.local_path)
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class LoadedWeights:
    """What ``load_pretrained`` loaded: the file, its sha256, its config (None for a bare safetensors file), and
    whether the classifier came with it."""

    path: Path
    sha256: str
    config: dict[str, Any] | None
    head_loaded: bool


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def metadata_of(info_or_metadata: Any) -> dict[str, Any]:
    """The config's metadata from a ``ModelInfo`` (duck-typed: zoo.registry imports this module) or a dict."""
    if isinstance(info_or_metadata, Mapping):
        src = dict(info_or_metadata)
        missing = [k for k in METADATA_KEYS if k not in src]
        if missing:
            raise WeightsError(f"weights metadata lacks {', '.join(missing)}")
    else:
        src = {k: getattr(info_or_metadata, k) for k in METADATA_KEYS}
    meta = {k: src[k] for k in METADATA_KEYS}
    meta["input_size"] = [int(v) for v in meta["input_size"]]
    meta["mean"], meta["std"] = [float(v) for v in meta["mean"]], [float(v) for v in meta["std"]]
    meta["categories"] = [str(c) for c in meta["categories"]]
    meta["metrics"] = dict(meta["metrics"])
    return meta


def save_pretrained(
    model: nn.Module, out_dir: str | Path, info_or_metadata: Any, dtype: torch.dtype | None = None
) -> Path:
    """Write ``model.safetensors`` (floating tensors cast to ``dtype`` if given) and ``config.json``."""
    from safetensors.torch import save_file

    spec = getattr(model, "spec", None)
    if spec is None:
        raise WeightsError(f"{type(model).__name__} has no .spec: only zoo networks can be saved with their arch")
    meta = metadata_of(info_or_metadata)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[key] = t.contiguous()
    # Both files are written in full before either replaces its old version, so a failure leaves the old pair.
    with atomic_output(out / WEIGHTS_FILE) as weights:
        save_file(tensors, weights, metadata={"format": "pt"})
        config = {"arch": spec.to_dict(), "metadata": meta, "weights_sha256": sha256_file(weights)}
        atomic_write(out / CONFIG_FILE, json.dumps(config, indent=1) + "\n")
    return out


def regular_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file (after symlinks): a device (``/dev/zero``), FIFO or socket would hang a
    reader or never end, so it is refused by name."""
    if not path.exists():
        raise WeightsError(f"{path}: missing (a weights directory holds {WEIGHTS_FILE} + {CONFIG_FILE})")
    if not path.is_file():
        raise WeightsError(f"{path}: not a regular file (a device, FIFO, socket or folder cannot be {what})")
    return path


def read_json_object(file: Path, what: str) -> dict[str, Any]:
    """The JSON object of a small file that may be untrusted: a regular file of at most ``MAX_CONFIG_BYTES``,
    refused in one line otherwise (``what`` names it in the messages)."""
    file = regular_file(file, what)
    size = file.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise WeightsError(f"{file}: {size:,} bytes; a {what} is at most {MAX_CONFIG_BYTES:,}")
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{file}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{file}: expected a JSON object")
    return data


def read_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a weights directory (or the file itself), checked for the keys loading needs."""
    path = Path(path)
    file = path / CONFIG_FILE if path.is_dir() else path
    config = read_json_object(file, CONFIG_FILE)
    for key, kind in (("arch", dict), ("metadata", dict), ("weights_sha256", str)):
        if not isinstance(config.get(key), kind):
            raise WeightsError(f"{file}: no {key!r} entry: not a proxyless-zoo weights config")
    if not isinstance(config["arch"].get("format"), str):
        raise WeightsError(f"{file}: arch has no 'format'")
    missing = [k for k in METADATA_KEYS if k not in config["metadata"]]
    if missing:
        raise WeightsError(f"{file}: metadata lacks {', '.join(missing)}")
    return config


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/REPO[@REV]`` -> (repo id, revision or None)."""
    m = _HUB_RE.match(source[len(HUB_PREFIX) :])
    if not source.startswith(HUB_PREFIX) or not m:
        raise WeightsError(f"bad Hub source {source!r}: expected 'hf-hub:ORG/REPO' or 'hf-hub:ORG/REPO@REVISION'")
    return m["repo"], m["rev"]


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _hub_download(source: str, filename: str) -> Path:
    """One file of a Hub repo via the HF cache; env vars read per call (not at import) so they can be set late."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = parse_hub_source(source)
    offline = _env_true("HF_HUB_OFFLINE") or constants.HF_HUB_OFFLINE
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    try:
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
            local_files_only=offline,
            endpoint=endpoint,
        )
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise WeightsError(f"{source}: {filename} is not in the local Hugging Face cache and {why}") from None
    except RevisionNotFoundError:
        raise WeightsError(f"{source}: revision {revision!r} not found on the Hub") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"{source}: repository {repo_id!r} not found on the Hub (or it is private)") from None
    except EntryNotFoundError:
        raise WeightsError(f"{source}: the repo has no {filename} (not proxyless-zoo weights)") from None
    except Exception as e:  # network failures: HTTP errors, httpx transport errors, OSError
        detail = (str(e).splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"{source}: download of {filename} failed: {detail}") from None
    return Path(path)


def hub_config(source: str) -> dict[str, Any]:
    """The checked ``config.json`` of ``hf-hub:ORG/REPO[@REV]``, fetched alone: describing a model costs no
    weights download (they come with ``pretrained=True``, checked against this config's sha256)."""
    return read_config(_hub_download(source, CONFIG_FILE))


def resolve_weights(source: str | Path) -> Path:
    """The local ``.safetensors`` file a source names; for the Hub, its ``config.json`` is fetched beside it."""
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        _hub_download(source, CONFIG_FILE)
        return _hub_download(source, WEIGHTS_FILE)
    path = Path(source).expanduser()
    if path.is_dir():
        return regular_file(path / WEIGHTS_FILE, WEIGHTS_FILE)
    if not path.exists():
        raise WeightsError(f"{path}: no such file or directory")
    regular_file(path, "weights")
    if path.suffix != ".safetensors":
        raise WeightsError(
            f"{path}: not a .safetensors file; convert an authors' PyTorch checkpoint with "
            "`proxyless zoo import-official --arch NAME CKPT --out DIR`"
        )
    return path


def _arch_difference(saved: dict[str, Any], spec_dict: dict[str, Any]) -> str | None:
    """First field (ignoring name, head size, training-only ones) where two arch dicts differ, or None."""
    for key in sorted((set(saved) | set(spec_dict)) - _ARCH_FIELDS_IGNORED):
        a, b = saved.get(key), spec_dict.get(key)
        if a == b:
            continue
        if key == "blocks" and isinstance(a, list) and isinstance(b, list):
            for i, (x, y) in enumerate(zip(a, b, strict=False)):
                if x != y:
                    return f"block {i}: {json.dumps(x)[:60]} vs {json.dumps(y)[:60]}"
            return f"{len(a)} blocks vs {len(b)}"
        return f"{key}: {a!r} vs {b!r}"
    return None


def check_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], origin: str, optional: Iterable[str] = ()
) -> list[str]:
    """Refuse ``state`` unless its names and shapes are exactly the model's; keys in ``optional`` may be absent
    or differ in shape. Returns the keys of ``optional`` that cannot be loaded (to be skipped)."""
    optional, expected = set(optional), model.state_dict()
    skipped = []
    for key, t in expected.items():
        if key not in state:
            if key in optional:
                skipped.append(key)
                continue
            raise WeightsError(f"{origin}: weights for another architecture: missing key {key!r}")
        got = tuple(state[key].shape)
        if got != tuple(t.shape):
            if key in optional:
                skipped.append(key)
                continue
            raise WeightsError(
                f"{origin}: weights for another architecture: {key!r} has shape {list(got)}, "
                f"the network needs {list(t.shape)}"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise WeightsError(f"{origin}: weights for another architecture: unexpected key {extra[0]!r}")
    return skipped


def assign_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], origin: str, optional: Iterable[str] = ()
) -> list[str]:
    """Check then copy ``state`` into ``model`` (floating tensors cast to the model's dtypes); returns skipped keys."""
    skipped = set(check_state_dict(model, state, origin, optional))
    expected = model.state_dict()
    cast = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state.items() if k not in skipped}
    model.load_state_dict(cast, strict=not skipped)
    return sorted(skipped)


def load_pretrained(
    model: nn.Module, source: str | Path, *, sha256: str | None = None, allow_new_head: bool = False
) -> LoadedWeights:
    """Load checked weights into ``model``. The sha256 is ``sha256`` if given, else the one in ``config.json``
    beside the weights; with ``allow_new_head`` a classifier of another size is left as initialised."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolve_weights(source)
    # a config.json describes the model.safetensors beside it, not any other .safetensors file in that folder
    config = read_config(path.parent) if path.name == WEIGHTS_FILE and (path.parent / CONFIG_FILE).exists() else None
    expected = sha256 or (config["weights_sha256"] if config else None)
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise WeightsError(
            f"{path}: sha256 mismatch (expected {expected[:12]}…, got {actual[:12]}…): the file is corrupt or was "
            "changed"
        )
    spec = getattr(model, "spec", None)
    if config is not None and spec is not None:
        diff = _arch_difference(config["arch"], spec.to_dict())
        if diff:
            raise WeightsError(
                f"{path}: weights for another architecture ({config['arch'].get('name')!r}, the network is "
                f"{spec.name!r}): {diff}"
            )
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    head = [k for k in model.state_dict() if k.startswith(HEAD_PREFIX)] if allow_new_head else []
    skipped = assign_state_dict(model, state, str(path), optional=head)
    return LoadedWeights(path, actual, config, head_loaded=not skipped)


def hub_file(source: str, filename: str) -> Path:
    """One file of ``hf-hub:ORG/REPO[@REV]`` through the HF cache (one-line ``WeightsError`` on any failure)."""
    return _hub_download(source, filename)
