"""``proxyless zoo publish``: put a zoo network on the Hugging Face Hub (or in a folder) with its model card.

The repo folder is staged in a temporary directory (``model.safetensors`` + ``config.json`` via
``save_pretrained``, ``model.onnx``, ``README.md``) and sent in ONE commit with ``HfApi.create_commit``
(what ``upload_folder`` does underneath; explicit operations let the same commit delete a ``model.onnx`` left
from an earlier version). The printed commit id and sha256 pin a registry entry: the exact ``WeightsRef(...)``
is printed to paste. ``model.onnx`` is included by default, because the card promises one to users without
PyTorch: the file ``proxyless export`` wrote (``--onnx FILE``, the one its latency report measured), else an
export made here with ``torch.onnx`` (opset 18, dynamic batch; zoo does not import ``export``); ``--no-onnx``
leaves it out. Either is checked against the weights with ONNX Runtime when that is installed. On any failure
the staging folder is removed and nothing partial is left locally.

A trained elastic supernet's folder (``supernet.json`` + ``supernet.safetensors``, with the accuracy predictor and
its measured subnets when present) is published the same way, as those files and a card of its own (it is not one
network: ``proxyless search specialize --supernet hf-hub:ORG/REPO@REV`` uses it). The folder is checked first
(``zoo.supernet_folder``): a torn one is refused in one line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from zoo import supernet_folder as supernet
from zoo.files import output_folder
from zoo.model_card import read_report, render_card, render_supernet_card
from zoo.options import add_options, from_args, option
from zoo.registry import build_network, create_model, weights_dir_info
from zoo.supernet_folder import SupernetFolder, is_supernet_folder, read_supernet
from zoo.weights import CONFIG_FILE, WEIGHTS_FILE, load_pretrained, save_pretrained, sha256_file

ONNX_FILE = "model.onnx"
CARD_FILE = "README.md"
ONNX_TOLERANCE = 1e-3  # max |logit difference| relative to the logits' scale, fp32 ORT vs torch
ONNX_OPSET = 18  # what `proxyless export` writes too
# Files a publish of either kind writes: those of an earlier version that the new one lacks are deleted in its commit
# (an ONNX or a predictor of the previous weights, or a network's files replaced by a supernet with --force).
PUBLISHED_FILES = (WEIGHTS_FILE, CONFIG_FILE, ONNX_FILE, *supernet.FILES)


Kind = Literal["network", "supernet"]
# The Hub's repo ids (ORG/REPO of letters, digits, '.', '_', '-') and the branch names a publish commits to
# (git's ref rules, narrowed: no '..', '//', leading '-' or '.', trailing '/', '.' or '.lock', no space or quote).
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", re.ASCII)
BRANCH = re.compile(r"(?!.*(\.\.|//|/\.|\.lock$|[./]$))[A-Za-z0-9_][\w./-]*", re.ASCII)


class PublishError(ValueError):
    """A publish that cannot start or did not finish; the message is one line."""


@dataclass(frozen=True)
class PublishResult:
    """What was published: where, which commit (None for a dry run) and the weights' sha256."""

    name: str
    repo_id: str
    revision: str
    commit: str | None
    sha256: str
    files: list[str]
    folder: str | None = None  # the --dry-run folder
    kind: Kind = "network"

    @property
    def weights_ref(self) -> str | None:
        """The line to paste into a registry entry (``zoo.registry.WeightsRef``); None for a dry run or a supernet,
        which no registry entry can load."""
        if self.commit is None or self.kind != "network":
            return None
        return f'WeightsRef(sha256="{self.sha256}", repo_id="{self.repo_id}", revision="{self.commit}")'

    @property
    def source(self) -> str | None:
        """``hf-hub:ORG/REPO@COMMIT``: what loads exactly these files (``--supernet`` of ``specialize``)."""
        return None if self.commit is None else f"hf-hub:{self.repo_id}@{self.commit}"


def load_model(name: str) -> nn.Module:
    """A registered model with its weights, or the model of a ``save_pretrained`` directory."""
    if Path(name).is_dir():
        info = weights_dir_info(name)
        model = build_network(info.arch)
        load_pretrained(model, name, sha256=info.weights.sha256)
        model.info = info
        return model.eval()
    return create_model(name, pretrained=True).eval()


def export_onnx(model: nn.Module, path: Path) -> None:
    """Write ``model`` as ONNX for a publish given no ``--onnx`` file: input ``input`` [batch, C, H, W], output
    ``logits``, batch dynamic, weights inline; with the exporter PyTorch maintains (``dynamo``, as ``proxyless
    export`` uses by default)."""
    if importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnx") is None:
        raise PublishError(
            "exporting model.onnx needs onnx and onnxscript (pip install 'proxyless-zoo[export]'); "
            "or pass --onnx FILE, or --no-onnx to publish without it"
        )
    c, h, w = model.info.input_size
    example = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))  # batch 1 would specialize
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter prints progress and deprecation notes; check_onnx reports what matters in one line.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model.eval(),
                (example,),
                str(path),
                input_names=["input"],
                output_names=["logits"],
                opset_version=ONNX_OPSET,
                dynamo=True,
                dynamic_shapes=({0: batch},),
                external_data=False,
            )
        except Exception as e:  # torch.export and the ONNX translation raise many exception types
            raise PublishError(
                f"exporting model.onnx failed ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]}); "
                "pass --onnx FILE from `proxyless export`, or --no-onnx"
            ) from e


def check_onnx(model: nn.Module, onnx_path: Path, label: str) -> str:
    """Refuse an ONNX file that does not compute the same logits as ``model``; says what was checked.
    ``label`` names the file in messages: the ``--onnx FILE`` the user gave, or the export made here."""
    try:
        import onnxruntime as ort
    except ImportError:
        return f"{label}: not checked against the weights (onnxruntime is not installed)"
    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for unreadable/invalid models
        raise PublishError(f"{label}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
    c, h, w = model.info.input_size
    x = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    inp = session.get_inputs()[0]
    try:
        got = session.run(None, {inp.name: x.numpy()})[0]
    except Exception as e:  # shape/dtype mismatches surface as ORT runtime errors
        raise PublishError(
            f"{label}: does not take a 1x{c}x{h}x{w} input like {model.info.name} "
            f"(its input {inp.name!r} is {inp.shape})"
        ) from e
    if got.shape != expected.shape:
        raise PublishError(f"{label}: outputs {list(got.shape)}, {model.info.name} {list(expected.shape)}")
    diff = float(abs(got - expected).max())
    scale = max(1.0, float(abs(expected).max()))
    if diff > ONNX_TOLERANCE * scale:
        raise PublishError(
            f"{label}: logits differ from the weights being published by up to {diff:.3g}: "
            "it is an export of another model or of other weights"
        )
    return f"{label}: matches the weights (max |logit diff| {diff:.2g}, ONNX Runtime)"


def stage(
    model: nn.Module,
    folder: Path,
    *,
    repo_id: str,
    revision: str,
    reports: Sequence[str | Path] = (),
    onnx: str | Path | bool = True,
    license: str = "mit",
    code_repo: str | None = None,
) -> list[str]:
    """Write the repo folder (weights, config, ONNX, card) into the existing empty ``folder``; returns its files.
    ``onnx``: a file ``proxyless export`` wrote, True to export one here, False for none."""
    from huggingface_hub import ModelCard

    loaded_reports = [read_report(p) for p in reports]
    if isinstance(onnx, str | Path):
        onnx = Path(onnx)
        if not onnx.is_file():
            raise PublishError(f"--onnx {onnx}: no such file")
        print(check_onnx(model, onnx, f"--onnx {onnx}"))
        shutil.copyfile(onnx, folder / ONNX_FILE)
    elif onnx:
        export_onnx(model, folder / ONNX_FILE)
        print(check_onnx(model, folder / ONNX_FILE, f"{ONNX_FILE} (exported here)"))
    save_pretrained(model, folder, model.info)
    sha = sha256_file(folder / WEIGHTS_FILE)
    card = render_card(
        model.info,
        repo_id=repo_id,
        revision=revision,
        weights_sha256=sha,
        reports=loaded_reports,
        has_onnx=(folder / ONNX_FILE).is_file(),
        license=license,
        code_repo=code_repo,
    )
    ModelCard(card)  # parses the front matter: a card the Hub would reject fails here, before any upload
    (folder / CARD_FILE).write_text(card)
    return sorted(p.name for p in folder.iterdir())


def stage_supernet(sn: SupernetFolder, folder: Path, *, repo_id: str, revision: str, license: str = "mit") -> list[str]:
    """Copy the supernet's files and write its card into the existing empty ``folder``; returns its files. The
    copies are checked again: a folder rewritten since ``read_supernet`` (a training still saving) is refused."""
    from huggingface_hub import ModelCard

    card = render_supernet_card(sn, repo_id=repo_id, revision=revision, license=license)
    ModelCard(card)  # parses the front matter: a card the Hub would reject fails here, before any upload
    for name in sn.files:
        shutil.copyfile(sn.path / name, folder / name)
    checked = {supernet.WEIGHTS: sn.sha256}
    if sn.predictor is not None:
        checked[supernet.PREDICTOR_WEIGHTS] = sn.predictor.sha256
    for name, sha in checked.items():
        if sha256_file(folder / name) != sha:
            raise PublishError(f"{sn.path / name}: changed while it was being copied; publish again when it is saved")
    (folder / CARD_FILE).write_text(card)
    return sorted(p.name for p in folder.iterdir())


def write_dry_run(out: Path, fill: Callable[[Path], list[str]], force: bool = False) -> list[str]:
    """``fill`` a temp folder beside ``out``, then rename it to ``out``: a crash never leaves half a folder; a used
    ``out`` is refused unless ``force`` (``zoo.files.output_folder``, as every command that writes a folder)."""
    with output_folder(out, force=force, flag="--dry-run") as tmp:
        return fill(tmp)


def _reason(e: BaseException) -> str:
    """One line from a client exception (huggingface_hub errors are multi-line, with the URL and request id)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = f"{type(e).__name__}: {lines[0] if lines else 'no message'}"
    cause = e.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip().splitlines()[0] not in text:
        text += f" ({type(cause).__name__}: {str(cause).strip().splitlines()[0]})"
    if "xet" in text.lower():
        text += " — this endpoint does not speak Xet: set HF_HUB_DISABLE_XET=1"
    return text


def _remote_json(
    api: Any, repo_id: str, revision: str, token: str, cache_dir: Path, filename: str
) -> dict[str, Any] | None:
    """The JSON file ``filename`` already at ``repo_id@revision``; None when the repo, branch or file does not
    exist, {} when it is not a JSON object."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = hf_hub_download(
            repo_id, filename, revision=revision, token=token, cache_dir=cache_dir, endpoint=api.endpoint
        )
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None
    except LocalEntryNotFoundError as e:  # the HEAD request failed for network reasons (cache_dir is empty)
        cause = f" ({_reason(e.__cause__)})" if e.__cause__ else ""
        raise PublishError(f"cannot reach the Hub at {api.endpoint}{cause}") from e
    except EntryNotFoundError:  # no such file there (RemoteEntryNotFoundError in huggingface_hub >= 1.0)
        return None
    try:
        config = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return config if isinstance(config, dict) else {}


def _same_model(remote: dict[str, Any], ours: dict[str, Any]) -> bool:
    """A new version of the same network (retrained weights) may replace the old; another network may not."""
    arch = remote.get("arch")
    if not isinstance(arch, dict):
        return False
    # what a retraining may change: the name, training-only fields and the search/training metadata in "extra"
    retrainable = {"name", "dropout", "bn_momentum", "extra"}
    return {k: v for k, v in arch.items() if k not in retrainable} == {
        k: v for k, v in ours.items() if k not in retrainable
    }


@dataclass(frozen=True)
class Identity:
    """What a publish puts in the repo, to tell an earlier version of it (replaced) from anything else (refused
    without --force): the file naming it (``config.json`` or ``supernet.json``) and that file's content."""

    config_file: str
    config: dict[str, Any]  # a network's arch dict, or the supernet.json


def _occupant(filename: str, remote: dict[str, Any], ours: Identity) -> str | None:
    """What the repo's ``filename`` says it holds, when that is not an earlier version of ours; else None.
    A supernet may be retrained (new weights, figures, recipe), not moved to another space definition."""
    if filename == CONFIG_FILE:
        if ours.config_file == CONFIG_FILE and _same_model(remote, ours.config):
            return None
        other = remote.get("arch", {}).get("name") if isinstance(remote.get("arch"), dict) else None
        return f"another model ({other!r})" if other else "a config.json that is not this model's"
    if ours.config_file == supernet.CONFIG and remote.get("space_definition") == ours.config["space_definition"]:
        return None
    return f"an elastic supernet (space {remote.get('space')!r})"


def upload(
    folder: Path,
    *,
    repo_id: str,
    revision: str,
    private: bool,
    token: str,
    force: bool,
    identity: Identity,
    cache_dir: Path,
    message: str,
) -> str:
    """Create the repo/branch if needed, refuse to clobber another model, commit ``folder``; returns the commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    where = f"{api.endpoint}/{repo_id}@{revision}"
    try:
        for filename in (CONFIG_FILE, supernet.CONFIG):
            remote = None if force else _remote_json(api, repo_id, revision, token, cache_dir, filename)
            what = None if remote is None else _occupant(filename, remote, identity)
            if what:
                raise PublishError(
                    f"{where} already holds {what}; refusing to overwrite it (pass --force to replace it)"
                )
        api.create_repo(repo_id, private=True if private else None, exist_ok=True)  # None: the org's default
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        ops: list[Any] = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=p) for p in sorted(folder.iterdir())]
        present = {s.rfilename for s in api.repo_info(repo_id, revision=revision).siblings or []}
        stale = sorted(present.intersection(PUBLISHED_FILES) - {p.name for p in folder.iterdir()})
        ops += [CommitOperationDelete(path_in_repo=name) for name in stale]  # files of the previous version
        info = api.create_commit(repo_id, ops, commit_message=message, revision=revision)
    except PublishError:
        raise
    except Exception as e:  # transport errors differ across huggingface_hub versions (requests/httpx/httpx2)
        raise PublishError(f"upload to {where} failed: {_reason(e)}") from e
    return str(info.oid)


def _refuse_links_out(sn: SupernetFolder) -> None:
    """A published repo is public: a file of the folder that is a symlink to somewhere outside it (a private file,
    another run's weights) is refused in one line, before anything is copied or sent."""
    root = sn.path.resolve()
    for name in sn.files:
        path = sn.path / name
        target = path.resolve()
        if path.is_symlink() and not target.is_relative_to(root):
            raise PublishError(
                f"{path}: a symlink to {target}, outside the supernet folder; refusing to publish it "
                "(copy the file into the folder if it belongs to this supernet)"
            )


@dataclass(frozen=True)
class Publishable:
    """A network or a supernet, ready to stage: its name, kind, repo identity, weights file and how to stage it."""

    label: str
    kind: Kind
    identity: Identity
    weights_file: str
    fill: Callable[[Path], list[str]]  # stage the repo folder into an existing empty folder; returns its files


def _publishable(
    name: str,
    *,
    repo_id: str,
    revision: str,
    reports: Sequence[str | Path],
    onnx: str | Path | bool,
    license: str,
    code_repo: str | None,
) -> Publishable:
    """A supernet folder (checked; refused in one line when torn), or a registered net or weights directory."""
    if is_supernet_folder(name):
        sn = read_supernet(name)
        _refuse_links_out(sn)
        return Publishable(
            f"{sn.space.name} supernet",
            "supernet",
            Identity(supernet.CONFIG, sn.config),
            supernet.WEIGHTS,
            lambda folder: stage_supernet(sn, folder, repo_id=repo_id, revision=revision, license=license),
        )
    model = load_model(name)
    return Publishable(
        model.info.name,
        "network",
        Identity(CONFIG_FILE, model.info.arch.to_dict()),
        WEIGHTS_FILE,
        lambda folder: stage(
            model,
            folder,
            repo_id=repo_id,
            revision=revision,
            reports=reports,
            onnx=onnx,
            license=license,
            code_repo=code_repo,
        ),
    )


def publish(
    name: str,
    repo_id: str,
    *,
    revision: str = "main",
    private: bool = False,
    token: str | None = None,
    reports: Sequence[str | Path] = (),
    onnx: str | Path | bool = True,
    force: bool = False,
    dry_run: str | Path | None = None,
    license: str = "mit",
    code_repo: str | None = None,
) -> PublishResult:
    """Publish model ``name`` (registered name, weights directory or supernet folder) to ``repo_id``, or to a folder
    with ``dry_run``. ``onnx``: a ``proxyless export`` file, True to export one here (the default), False for none
    (a supernet has none). Token: ``token``, else ``HF_TOKEN``, else the one saved by ``hf auth login``."""
    if not REPO_ID.fullmatch(repo_id):
        raise PublishError(f"--repo-id {repo_id!r}: expected ORG/REPO (letters, digits, '.', '_', '-')")
    if re.fullmatch(r"[0-9a-f]{40}", revision) or not BRANCH.fullmatch(revision):
        raise PublishError(
            f"--revision {revision!r}: expected a branch name (letters, digits, '.', '_', '-', '/'; "
            "commits are made on branches)"
        )
    if code_repo is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w./-]+)?", code_repo):
        raise PublishError(f"--code-repo {code_repo!r}: expected GitHub OWNER/REPO[:REF] (torch.hub's form)")
    if is_supernet_folder(name) and (reports or isinstance(onnx, str | Path) or code_repo is not None):
        raise PublishError(f"{name} is a supernet folder: --report, --onnx and --code-repo are for single networks")
    if dry_run is None:
        from huggingface_hub import get_token

        token = token or get_token()
        if not token:
            raise PublishError("no Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass --token")
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            raise PublishError("HF_HUB_OFFLINE is set: cannot upload (use --dry-run DIR to write the folder)")
    item = _publishable(
        name, repo_id=repo_id, revision=revision, reports=reports, onnx=onnx, license=license, code_repo=code_repo
    )
    if dry_run is not None:
        files = write_dry_run(Path(dry_run), item.fill, force)
        sha = sha256_file(Path(dry_run) / item.weights_file)
        return PublishResult(item.label, repo_id, revision, None, sha, files, str(dry_run), item.kind)
    with tempfile.TemporaryDirectory(prefix="proxyless-publish-") as tmp:
        folder, cache = Path(tmp, "repo"), Path(tmp, "cache")
        folder.mkdir()
        files = item.fill(folder)
        sha = sha256_file(folder / item.weights_file)
        print(f"staged {', '.join(files)}; uploading to {repo_id}@{revision}")
        commit = upload(
            folder,
            repo_id=repo_id,
            revision=revision,
            private=private,
            token=str(token),
            force=force,
            identity=item.identity,
            cache_dir=cache,
            message=f"Publish {item.label} (weights sha256 {sha[:12]})",
        )
    return PublishResult(item.label, repo_id, revision, commit, sha, files, kind=item.kind)


@dataclass(frozen=True)
class PublishOptions:
    """``proxyless zoo publish``: each field one option (zoo.options)."""

    name: str = option(
        MISSING,
        "registered model name, a save_pretrained weights directory, or a supernet folder (supernet.json)",
        positional=True,
    )
    repo_id: str = option(MISSING, "ORG/REPO on the Hub", flag=("--repo-id", "--repo"))
    revision: str = option("main", "branch to commit to (created if missing; default main)")
    private: bool = option(False, "create the repo private (an existing repo is unchanged)", switch=True)
    token: str | None = option(None, "Hub token (default: HF_TOKEN, else the one saved by `hf auth login`)")
    report: tuple[str, ...] = option((), "export report JSON (repeatable)", repeat=True, metavar="FILE")
    onnx: str | None = option(
        None,
        "the model.onnx `proxyless export` wrote for these weights (default: export one here)",
        metavar="FILE",
        exclusive="onnx",
    )
    no_onnx: bool = option(False, "publish without model.onnx", switch=True, exclusive="onnx")
    license: str = option("mit", "license in the model card (default mit)")
    code_repo: str | None = option(
        None,
        "GitHub repo serving this project's hubconf.py, for the card's torch.hub snippet (default: a local clone)",
        metavar="OWNER/REPO[:REF]",
    )
    force: bool = option(False, "replace another model already in the repo (or a used --dry-run DIR)", switch=True)
    dry_run: str | None = option(None, "write the repo folder to DIR instead of uploading", metavar="DIR")
    json: bool = option(False, "end with one line of JSON", switch=True)


def run(args: PublishOptions) -> int:
    result = publish(
        args.name,
        args.repo_id,
        revision=args.revision,
        private=args.private,
        token=args.token,
        reports=args.report,
        onnx=False if args.no_onnx else (args.onnx or True),
        force=args.force,
        dry_run=args.dry_run,
        license=args.license,
        code_repo=args.code_repo,
    )
    if result.commit is None:
        print(f"wrote {result.folder}: {', '.join(result.files)} (dry run: nothing uploaded)")
    else:
        print(f"published {result.name} to {result.repo_id}@{result.revision}: commit {result.commit}")
    if result.commit and result.kind == "supernet":
        print("specialize a net from exactly these files with:")
        print(f"    proxyless search specialize --supernet {result.source} --lut cpu --factor 0.75 --out DIR")
    elif result.commit:
        print("pin a registry entry to it with:")
        print(f"    weights={result.weights_ref},")
    if args.json:
        print(json.dumps({**asdict(result), "weights_ref": result.weights_ref, "source": result.source}))
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "publish",
        help="upload a model (weights, config, ONNX, model card) or an elastic supernet to the Hugging Face Hub",
        description="Upload a zoo network (weights, config, ONNX, model card) to the Hugging Face Hub in one "
        "commit and print the WeightsRef that pins it; or a trained elastic supernet's folder (supernet, "
        "predictor, card) and the specialize command that uses it. --dry-run DIR writes the folder instead.",
    )
    add_options(p, PublishOptions)
    p.set_defaults(func=lambda args: run(from_args(PublishOptions, args)))
