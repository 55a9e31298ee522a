"""A trained supernet on disk: ``supernet.safetensors`` + ``supernet.json`` (space, recipe, figures, sha256).

The space's full definition is stored and checked on load, so weights never meet a space they were not trained
for. Loading reads safetensors only (nothing is unpickled).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from search.elastic.predictor import CONFIG as PREDICTOR_CONFIG
from search.elastic.predictor import WEIGHTS as PREDICTOR_WEIGHTS
from search.elastic.space import ElasticSpace, get_elastic_space
from search.elastic.supernet import ElasticSupernet
from zoo.files import atomic_output, atomic_write
from zoo.inputs import one_line
from zoo.supernet_folder import read_format_json
from zoo.weights import HUB_PREFIX, WeightsError, hub_file, parse_hub_source, sha256_file

FORMAT = "proxyless-elastic-supernet/1"
BUNDLED = Path(__file__).parent / "pretrained"  # one folder per space: the supernets a fresh clone specializes
WEIGHTS = "supernet.safetensors"
CONFIG = "supernet.json"


def space_definition(space: ElasticSpace) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(space)))


def save_supernet(model: ElasticSupernet, out: str | Path, metadata: dict[str, Any]) -> Path:
    """Weights first, then the config naming their sha256: a crash leaves the old pair or none."""
    from safetensors.torch import save_file

    out = Path(out)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(out / WEIGHTS) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
        config = {
            "format": FORMAT,
            "space": model.space.name,
            "space_definition": space_definition(model.space),
            "metadata": metadata,
            "weights_sha256": sha256_file(tmp),
        }
        atomic_write(out / CONFIG, json.dumps(config, indent=1, allow_nan=False) + "\n")
    return out


def read_supernet_config(folder: str | Path) -> dict[str, Any]:
    """``supernet.json`` through the guarded reader, with the keys loading and specializing use checked."""
    file = Path(folder) / CONFIG
    config = read_format_json(file, FORMAT)
    for key, kind in (("space", str), ("space_definition", dict), ("metadata", dict), ("weights_sha256", str)):
        if not isinstance(config.get(key), kind):
            got = type(config.get(key)).__name__ if key in config else "nothing"
            raise WeightsError(f"{file}: {key!r} must be a JSON {_JSON_KIND[kind]}, got {got}")
    return config


def recipe_of(config: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """The training recipe ``supernet.json`` records (its data split and BN calibration are what subnets are
    scored with), refused in one line where it is missing or mistyped."""
    recipe = config["metadata"].get("recipe")
    if not isinstance(recipe, dict):
        raise WeightsError(
            f"{Path(folder) / CONFIG}: metadata.recipe must be an object (the supernet's training recipe)"
        )
    return recipe


_JSON_KIND = {str: "string", dict: "object"}


def resolve_supernet(source: str | Path | None, space: str = "fmnist") -> Path:
    """The local folder of a supernet source: a folder, ``hf-hub:ORG/REPO[@REV]`` (fetched into the HF cache,
    the predictor too where the repo has one), or None for the supernet bundled for ``space``."""
    if source is None:
        folder = BUNDLED / space
        if not (folder / CONFIG).is_file():
            raise WeightsError(
                f"no supernet is bundled for space {space!r}: train one (`make fmnist-supernet`), pass --supernet"
            )
        return folder
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        return _fetch_from_hub(source)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise WeightsError(f"supernet {folder}: no such folder (a supernet folder holds {WEIGHTS} + {CONFIG})")
    return folder


def _fetch_from_hub(source: str) -> Path:
    """The snapshot folder of ``source`` holding the supernet and, where the repo has one, its predictor.

    The revision is resolved once (by fetching ``supernet.json``) and every other file is fetched at that commit, so
    a branch that moves meanwhile cannot mix two versions. A missing predictor is told from a failed download by
    the client's record of absent files (``.no_exist`` in the cache, also read offline): any other failure to fetch
    it is an error, not a silent "no predictor".
    """
    from huggingface_hub import _CACHED_NO_EXIST, try_to_load_from_cache  # the documented way to test for it

    repo_id, _ = parse_hub_source(source)
    folder = hub_file(source, CONFIG).parent  # .../snapshots/<commit>
    pinned = f"{HUB_PREFIX}{repo_id}@{folder.name}"
    hub_file(pinned, WEIGHTS)
    try:
        hub_file(pinned, PREDICTOR_CONFIG)
    except WeightsError:
        cache = os.environ.get("HF_HUB_CACHE") or None
        if try_to_load_from_cache(repo_id, PREDICTOR_CONFIG, cache_dir=cache, revision=folder.name) is _CACHED_NO_EXIST:
            return folder  # the repo has no predictor: specialize says how to fit one
        raise
    hub_file(pinned, PREDICTOR_WEIGHTS)
    return folder


def load_supernet(folder: str | Path) -> tuple[ElasticSupernet, dict[str, Any]]:
    """The supernet of ``folder`` (checked: sha256, space definition) and its config."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_supernet_config(folder)
    space = get_elastic_space(config["space"])
    if config["space_definition"] != space_definition(space):
        raise WeightsError(f"{folder}: trained for another definition of elastic space {space.name!r}")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise WeightsError(f"{weights}: missing")
    if sha256_file(weights) != config["weights_sha256"]:
        raise WeightsError(f"{weights}: sha256 does not match {CONFIG} (corrupt or replaced)")
    model = ElasticSupernet(space)
    try:
        model.load_state_dict(load_file(weights), strict=True)
    except (SafetensorError, RuntimeError) as e:  # truncated, or tensors of another shape (sha256 recomputed)
        raise WeightsError(f"{weights}: not the tensors of elastic space {space.name!r} ({one_line(e)})") from None
    return model.eval(), config
