"""A trained supernet on disk: ``supernet.safetensors`` + ``supernet.json`` (space, recipe, figures, sha256).

The space's full definition is stored and checked on load, so weights never meet a space they were not trained
for. Loading reads safetensors only (nothing is unpickled).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from search.elastic.space import ElasticSpace, get_elastic_space
from search.elastic.supernet import ElasticSupernet
from zoo.files import atomic_output, atomic_write
from zoo.weights import HUB_PREFIX, WeightsError, hub_file, sha256_file

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
        atomic_write(out / CONFIG, json.dumps(config, indent=1) + "\n")
    return out


def read_supernet_config(folder: str | Path) -> dict[str, Any]:
    file = Path(folder) / CONFIG
    try:
        config = json.loads(file.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{file}: missing (a supernet folder holds {WEIGHTS} + {CONFIG})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise WeightsError(f"{file}: not a {FORMAT} config")
    return config


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
        hub_file(source, CONFIG)
        folder = hub_file(source, WEIGHTS).parent
        for optional in ("predictor.json", "predictor.safetensors"):
            try:
                hub_file(source, optional)
            except WeightsError:
                break
        return folder
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise WeightsError(f"supernet {folder}: no such folder (a supernet folder holds {WEIGHTS} + {CONFIG})")
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
    model.load_state_dict(load_file(weights), strict=True)
    return model.eval(), config
