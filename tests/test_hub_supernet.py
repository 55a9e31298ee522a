"""A trained elastic supernet on the Hub: ``proxyless zoo publish`` of its folder (card, checks) and
``proxyless search specialize --supernet hf-hub:ORG/REPO@REV``, end to end against the local Hub server.

One tiny supernet (8 steps on synthetic data) and its predictor serve the whole module. Publishing and specializing
run in subprocesses with HF_ENDPOINT / HF_HOME / HF_TOKEN set, as a user runs them (see tests/test_hub_publish.py).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hub_server import TOKEN, HubServer
from huggingface_hub import ModelCard
from test_elastic_search import TINY
from test_hub_card_hostile import HOSTILE, _shape, _text
from test_hub_publish import _client_env

from search.cli import main as search_main
from search.elastic import predictor, predictor_cli, store
from search.elastic.space import get_elastic_space
from search.elastic.train import ElasticTrainConfig, train_supernet
from zoo import supernet_folder
from zoo.cli import main as zoo_main
from zoo.model_card import render_supernet_card
from zoo.registry import weights_dir_info
from zoo.weights import WeightsError, hub_file, sha256_file

ROOT = Path(__file__).resolve().parents[1]
REPO = "proxyless-test/fmnist-supernet"
FETCHED = ["predictor.json", "predictor.safetensors", "supernet.json", "supernet.safetensors"]  # what specialize needs
SUPERNET_FILES = sorted([*FETCHED, "subnet_accuracy.csv"])  # what a publish carries


@pytest.fixture(scope="module")
def supernet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny supernet with its predictor, as `elastic-train` + `elastic-predictor` leave the folder."""
    run = tmp_path_factory.mktemp("supernet") / "run"
    train_supernet(ElasticTrainConfig(out=str(run), state_dtype="float32", **TINY))
    assert search_main(["elastic-predictor", "--supernet", str(run), "--subnets", "12", "--no-progress"]) == 0
    return run


def _copy(supernet: Path, to: Path, files: list[str] = SUPERNET_FILES) -> Path:
    to.mkdir()
    for name in files:
        shutil.copyfile(supernet / name, to / name)
    return to


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _env(hub: HubServer, folder: Path) -> dict[str, str]:
    folder.mkdir()
    return _client_env(hub, folder)


def _publish(folder: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return _run(["-m", "zoo", "publish", str(folder), "--repo", REPO, "--json", *extra], env)


def test_zoo_names_the_files_search_writes() -> None:
    """zoo cannot import search, so it repeats the names and formats: they must not drift apart."""
    assert (supernet_folder.FORMAT, supernet_folder.WEIGHTS, supernet_folder.CONFIG) == (
        store.FORMAT,
        store.WEIGHTS,
        store.CONFIG,
    )
    assert (supernet_folder.PREDICTOR_FORMAT, supernet_folder.PREDICTOR_WEIGHTS, supernet_folder.PREDICTOR_CONFIG) == (
        predictor.FORMAT,
        predictor.WEIGHTS,
        predictor.CONFIG,
    )
    assert supernet_folder.SUBNETS_CSV == predictor_cli.CSV


def test_publish_then_specialize_from_the_hub(supernet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = sha256_file(supernet / "supernet.safetensors")
    with HubServer() as hub:
        proc = _publish(supernet, _env(hub, tmp_path / "publisher"), "--revision", "v1")
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        commit = result["commit"]
        assert (result["kind"], result["sha256"], result["weights_ref"]) == ("supernet", sha, None)
        assert f"--supernet hf-hub:{REPO}@{commit} --lut cpu" in proc.stdout  # the command to run, pinned
        assert hub.state.repos[REPO].branches["v1"] == commit and "PUT lfs_upload" in hub.state.requests
        for name in SUPERNET_FILES:
            assert hub.state.file(REPO, commit, name) == (supernet / name).read_bytes(), name
        card = tmp_path / "README.md"
        card.write_bytes(hub.state.file(REPO, commit, "README.md"))
        text = ModelCard.load(card).text
        assert f"--supernet hf-hub:{REPO}@v1 --lut cpu --factor 0.75 --out fmnist_cpu_075" in text

        # A user with an empty cache specializes from the Hub.
        out = tmp_path / "fmnist_cpu_075"
        user = _env(hub, tmp_path / "user")
        args = ["-m", "search", "specialize", "--supernet", f"hf-hub:{REPO}@v1", "--lut", "cpu", "--factor", "0.75"]
        args += ["--out", str(out), "--population", "8", "--generations", "2", "--top", "1", "--threads", "1"]
        spec = _run(args, user)
        assert spec.returncode == 0, spec.stderr[-3000:]
    record = json.loads(spec.stdout.strip().splitlines()[-1])
    assert record["latency"] <= record["limit"]
    info = weights_dir_info(out)
    assert info.metrics["supernet_sha256"] == sha
    assert str(get_elastic_space("fmnist").subnet_of(info.arch)) == record["subnet"]
    written = json.loads((out / "specialize.json").read_text())
    assert (written["supernet"], written["supernet_sha256"]) == (f"hf-hub:{REPO}@v1", sha)
    monkeypatch.setenv("PROXYLESS_ZOO_EXTRA", "")  # restored after the card's snippet sets it
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(re.findall(r"```python\n(.*?)```", text, re.S)[0], scope)  # the card's snippet loads what specialize wrote
    assert scope["model"].info.weights.sha256 == json.loads((out / "config.json").read_text())["weights_sha256"]
    snapshot = tmp_path / "user" / "home" / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit
    assert sorted(p.name for p in snapshot.iterdir()) == FETCHED

    # Server gone: offline, the same source resolves from the cache, predictor included.
    script = "import sys; from search.elastic.store import resolve_supernet; print(resolve_supernet(sys.argv[1]))"
    offline = _run(["-c", script, f"hf-hub:{REPO}@v1"], {**user, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert Path(offline.stdout.strip()) == snapshot


def test_a_hub_supernet_without_predictor_resolves_at_one_commit(
    supernet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {name: (supernet / name).read_bytes() for name in ("supernet.json", "supernet.safetensors")}
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        first = hub.state.seed(REPO, files)
        folder = store.resolve_supernet(f"hf-hub:{REPO}")
        assert folder.name == first and sorted(p.name for p in folder.iterdir()) == sorted(files)
        assert predictor.load_predictor(get_elastic_space("fmnist"), folder) is None  # specialize says: fit one
        requests = len(hub.state.requests)
        assert store.resolve_supernet(f"hf-hub:{REPO}").name == first  # the absence is cached per commit
        assert hub.state.requests[requests:].count("GET resolve") == 0
        second = hub.state.seed(REPO, {name: (supernet / name).read_bytes() for name in SUPERNET_FILES})
        folder = store.resolve_supernet(f"hf-hub:{REPO}")
        assert folder.name == second and (folder / "predictor.safetensors").is_file()
    # A cache that lost the predictor is an error offline, not a supernet without one.
    for name in ("predictor.json", "predictor.safetensors"):
        (folder / name).unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"predictor\.json is not in the local Hugging Face cache"):
        store.resolve_supernet(f"hf-hub:{REPO}")


def test_a_branch_moving_during_the_fetch_cannot_mix_versions(
    supernet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The revision is resolved once: files fetched after main moved still come from the first commit."""
    files = {name: (supernet / name).read_bytes() for name in SUPERNET_FILES}
    retrained = bytearray(files["supernet.safetensors"])
    retrained[-1] ^= 0xFF
    fetched: list[str] = []

    def fetch_then_push(source: str, filename: str) -> Path:
        path = hub_file(source, filename)
        if not fetched:  # someone pushes a new version right after supernet.json came
            hub.state.seed(REPO, {"supernet.safetensors": bytes(retrained)})
        fetched.append(source)
        return path

    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        first = hub.state.seed(REPO, files)
        monkeypatch.setattr(store, "hub_file", fetch_then_push)
        folder = store.resolve_supernet(f"hf-hub:{REPO}")
    assert folder.name == first and fetched[1:] == [f"hf-hub:{REPO}@{first}"] * 3
    assert store.load_supernet(folder)[1]["weights_sha256"] == sha256_file(supernet / "supernet.safetensors")


def test_dry_run_writes_the_supernet_and_its_card(
    supernet: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "repo"
    assert zoo_main(["publish", str(supernet), "--repo", REPO, "--dry-run", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["kind"], result["commit"], result["files"]) == ("supernet", None, ["README.md", *SUPERNET_FILES])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no DIR.tmp-* left beside it
    for name in SUPERNET_FILES:  # checkpoint, logs and TensorBoard files stay home
        assert (out / name).read_bytes() == (supernet / name).read_bytes(), name
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "pytorch" and "supernet" in card.data.tags and not card.data.eval_results
    text = card.text
    config = json.loads((supernet / "supernet.json").read_text())
    fit = json.loads((supernet / "predictor.json").read_text())["fit"]
    assert "**not a single network**" in text and "cannot be loaded with `create_model` or `torch.hub`" in text
    assert f"Weights sha256: `{config['weights_sha256']}`" in text
    assert f"--supernet hf-hub:{REPO} --lut cpu --factor 0.75 --out fmnist_cpu_075" in text
    assert f"RMSE {fit['rmse'] * 100:.2f} points" in text and f"Kendall tau {fit['kendall_tau']:.3f}" in text
    validation = config["metadata"]["validation"]
    assert f"| baseline | {validation['val_top1_baseline'] * 100:.2f}% |" in text
    assert "the 200 validation images held out from the `synthetic` training set" in text
    assert "| 2 | 40 | 2 | 1..3 |" in text and "117,418,896 subnets" in text
    assert "baseline (k3 e6 at full depth) is the subnet `d2332-k3333333333-e6666666666`" in text
    assert "| random_subnets | 2 |" in text and "arXiv:1908.09791" in text


def test_the_supernet_card_shows_markup_as_text_and_quotes_its_commands(supernet: Path) -> None:
    """A space name, recipe entry or validation key with markup or shell syntax: shown, never run or rendered."""
    sn = supernet_folder.read_supernet(supernet)

    def card(text: str) -> str:
        validation = {**sn.validation, f"val_top1_{text}": 0.5}
        other = replace(sn, space=replace(sn.space, name=text), recipe={**sn.recipe, text: text}, validation=validation)
        return render_supernet_card(other, repo_id=REPO, revision="v1")

    hostile, plain = card(HOSTILE + "; rm -rf ~"), card("plain words; and more")
    assert _shape(hostile) == _shape(plain)
    assert "<img" not in _text(hostile) and "[click](" not in _text(hostile)
    name = " ".join((HOSTILE + "; rm -rf ~").split())
    for line in re.search(r"(`{3,})bash\n(.*?)\n\1\n", hostile, flags=re.S).group(2).splitlines():
        args = shlex.split(line)  # as the shell reads it: the name is one word, its `;` no command separator
        assert args[args.index("--out") + 1] in (f"{name}_cpu_075", f"{name}_baseline"), line


def _corrupt(folder: Path) -> None:
    data = bytearray((folder / "supernet.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "supernet.safetensors").write_bytes(bytes(data))


def _other_predictor(folder: Path) -> None:
    config = json.loads((folder / "predictor.json").read_text())
    (folder / "predictor.json").write_text(json.dumps({**config, "supernet_sha256": "0" * 64}))


@pytest.mark.parametrize(
    ("tear", "message"),
    [
        (_corrupt, "is not the"),
        (lambda f: (f / "supernet.json").unlink(), "supernet.json: missing"),
        (lambda f: (f / "predictor.safetensors").unlink(), "predictor.safetensors: missing, but predictor.json"),
        (_other_predictor, "predictor.json: fit for another supernet"),
    ],
)
def test_a_torn_folder_is_refused_before_any_upload(
    supernet: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tear, message: str
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    folder = _copy(supernet, tmp_path / "torn")
    tear(folder)
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert zoo_main(["publish", str(folder), "--repo", REPO, "--token", "hf_x"]) == 2
        assert hub.state.requests == []  # refused before anything was sent
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {folder}") and message in err and len(err.splitlines()) == 1
    assert zoo_main(["publish", str(folder), "--repo", REPO, "--dry-run", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_a_symlink_out_of_the_folder_is_refused_before_any_upload(
    supernet: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A published repo is public: a file linked in from elsewhere (here a private CSV) must not ride along."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    folder = _copy(supernet, tmp_path / "linked", [f for f in SUPERNET_FILES if f != "subnet_accuracy.csv"])
    private = tmp_path / "private.csv"
    private.write_text("subnet,val_top1\nsecret,0.5\n")  # well-formed: only where it lives is wrong
    (folder / "subnet_accuracy.csv").symlink_to(private)
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert zoo_main(["publish", str(folder), "--repo", REPO, "--token", "hf_x"]) == 2
        assert hub.state.requests == []  # refused before anything was sent
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"error: {folder / 'subnet_accuracy.csv'}: a symlink to {private}")
        and len(err.splitlines()) == 1
    )
    assert zoo_main(["publish", str(folder), "--repo", REPO, "--dry-run", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    (folder / "subnet_accuracy.csv").unlink()  # a link that stays inside the folder is an ordinary file
    shutil.copyfile(private, folder / "data.csv")
    (folder / "subnet_accuracy.csv").symlink_to("data.csv")
    assert zoo_main(["publish", str(folder), "--repo", REPO, "--dry-run", str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / "subnet_accuracy.csv").read_text() == private.read_text()


def test_single_network_options_are_refused_for_a_supernet(supernet: Path, capsys: pytest.CaptureFixture) -> None:
    assert zoo_main(["publish", str(supernet), "--repo", REPO, "--dry-run", "x", "--onnx", "model.onnx"]) == 2
    assert "is a supernet folder: --report, --onnx and --code-repo are for single networks" in capsys.readouterr().err


def test_republishing_replaces_a_version_and_refuses_another_model(
    supernet: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = {"arch": {"format": "proxyless-mbconv/1", "name": "some_net"}, "metadata": {}, "weights_sha256": ""}
    with HubServer() as hub:
        hub.state.seed(REPO, {"config.json": json.dumps(net).encode(), "model.safetensors": b"net weights"})
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        assert zoo_main(["publish", str(supernet), "--repo", REPO, "--token", TOKEN]) == 2
        line = capsys.readouterr().err.strip()
        assert "already holds another model ('some_net')" in line and "--force" in line
        env = _client_env(hub, tmp_path)
        forced = _publish(supernet, env, "--force")
        assert forced.returncode == 0, forced.stderr[-3000:]
        commit = json.loads(forced.stdout.strip().splitlines()[-1])["commit"]
        tree = hub.state.repos[REPO].commits[commit]
        assert sorted(tree) == [".gitattributes", "README.md", *SUPERNET_FILES]  # the net's files are gone

        bare = _copy(supernet, tmp_path / "bare", ["supernet.json", "supernet.safetensors"])
        again = _publish(bare, env)  # same space: a new version, no --force; its stale predictor is deleted
        assert again.returncode == 0, again.stderr[-3000:]
        commit = json.loads(again.stdout.strip().splitlines()[-1])["commit"]
        kept = [".gitattributes", "README.md", "supernet.json", "supernet.safetensors"]
        assert sorted(hub.state.repos[REPO].commits[commit]) == kept
        assert "None is published with this supernet" in hub.state.file(REPO, commit, "README.md").decode()
