"""Hostile file inputs and numbers (issues 39 and 40): every file a user hands the project is read by the guarded
reader of ``zoo/inputs.py`` (a device or FIFO is refused at once, sizes are capped, JSON is strict), every
number is finite and bounded, and each refusal is one ``error: ...`` line naming the file or option, exit 2."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from export import cli as export_cli
from search import cli as search_cli
from search.elastic.predictor import AccuracyPredictor, PredictorFit, fit_predictor, load_predictor, save_predictor
from search.elastic.space import get_elastic_space
from search.elastic.specialize import SpecializeConfig, SpecializeError
from search.elastic.store import BUNDLED, load_supernet
from search.latency.lut import Entry, LatencyError, Lut
from search.latency.predict import TABLES
from zoo import proxyless_cli
from zoo.inputs import InputError, read_json, read_text
from zoo.supernet_folder import SupernetFolderError, read_supernet
from zoo.weights import WeightsError, sha256_file

FMNIST_TABLE = TABLES / "fmnist_cpu_onnxruntime_b1.json"
IMAGENET_TABLE = TABLES / "imagenet_cpu_onnxruntime_b1.json"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(64)


def _search(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``proxyless search ARGS``; it must exit 2 with exactly one ``error:`` line, which is returned."""
    assert search_cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _never(what: str):
    """A stand-in for expensive work a refused input must never reach (fails at once instead of running)."""

    def called(*args, **kwargs):
        raise AssertionError(f"{what} ran")

    return called


@pytest.fixture
def no_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """specialize must refuse before it loads a supernet or searches."""
    monkeypatch.setattr("search.elastic.specialize.resolve_supernet", _never("resolve_supernet"))


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "table.fifo"
    os.mkfifo(path)
    return path


# --- issue 39 item 4: unbounded reads -------------------------------------------------------------------------

LUT_READERS = [
    ["latency", "proxyless_mobile", "--lut", "{}"],
    ["profile", "--space", "fmnist", "--out", "{}", "--no-progress"],
    ["validate-lut", "--lut", "{}", "--no-progress"],
    ["mobile-loo", "--table", "{}"],
    ["mobile-table", "{}", "--out", "unused.json"],
]


@pytest.mark.parametrize("args", LUT_READERS, ids=lambda a: a[0])
@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_a_device_or_fifo_as_a_table_is_refused_at_once(args, kind, fifo, capsys):
    path = "/dev/zero" if kind == "dev-zero" else str(fifo)
    started = time.monotonic()
    line = _search([a.format(path) for a in args], capsys)
    assert f"{path}: not a regular file" in line
    assert time.monotonic() - started < 20  # a read of /dev/zero grew past 3 GB; a FIFO blocked forever


def test_an_oversize_file_is_refused_by_its_size_unread(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b" " * 2000)
    with pytest.raises(InputError, match=r"big.json: 2,000 bytes; a table is at most 1,000$"):
        read_json(path, "a table", max_bytes=1000)


def test_a_huge_population_is_refused_before_any_work(tmp_path, capsys, no_search):
    out = tmp_path / "net"
    args = ["specialize", "--lut", "flops", "--out", str(out), "--factor", "0.5", "--population", "100000000"]
    started = time.monotonic()
    assert "--population must be between 4 and 100,000, got 100,000,000" in _search(args, capsys)
    assert time.monotonic() - started < 20 and not out.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"generations": 100_000}, "--generations must be between 0 and 10,000"),
        ({"top": 1000}, "--top must be between 1 and 100"),
        ({"population": 100_000, "generations": 1000}, "predictor evaluations; at most 10,000,000"),
    ],
)
def test_search_sizes_have_upper_bounds(change, message, tmp_path):
    cfg = SpecializeConfig(lut="flops", out=str(tmp_path / "net"), factor=0.5, **change)
    with pytest.raises(SpecializeError, match=message):
        cfg.validate()


def test_validate_lut_sizes_are_bounded(capsys, monkeypatch):
    monkeypatch.setattr("search.latency.validate.validate", _never("validate"))
    line = _search(["validate-lut", "--lut", str(FMNIST_TABLE), "--archs", "100000000"], capsys)
    assert "--archs must be between 2 and 10,000" in line


# --- issue 39 item 5: non-finite numbers ----------------------------------------------------------------------


def _tampered_table(tmp_path: Path, value: str) -> Path:
    """The shipped fmnist table with its first entry's median replaced by ``value`` (JSON text)."""
    data = json.loads(FMNIST_TABLE.read_text())
    data["entries"][0]["median_ms"] = "@@"
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(data).replace('"@@"', value))
    return path


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Infinity", "Infinity is not a JSON number"),
        ("NaN", "NaN is not a JSON number"),
        ("1e999", "1e999 overflows a float"),
        ("1e308", "median_ms must be a finite number >= 0 and <= 1e+06, got 1e+308"),
        ("-1.5", "median_ms must be a finite number >= 0 and <= 1e+06, got -1.5"),
        ('"3"', "median_ms must be a number, got '3'"),
    ],
)
def test_a_table_value_that_is_not_a_finite_latency_is_refused(value, message, tmp_path, capsys, no_search):
    path = _tampered_table(tmp_path, value)
    with pytest.raises(LatencyError, match=f"^{re.escape(str(path))}: .*{re.escape(message)}"):
        Lut.load(path)
    line = _search(["specialize", "--lut", str(path), "--out", str(tmp_path / "net"), "--factor", "0.5"], capsys)
    assert str(path) in line and message in line and not (tmp_path / "net").exists()


def test_a_table_is_never_written_with_nan(tmp_path):
    lut = Lut.load(FMNIST_TABLE)
    key = next(iter(lut.entries))
    lut.entries[key] = Entry(key, 1, float("nan"), float("inf"), 0.0, 1)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        lut.save(tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--target-ms", "inf", "--target-ms must be a finite number > 0 and <= 1e+06, got inf"),
        ("--target-ms", "nan", "--target-ms must be a finite number > 0 and <= 1e+06, got nan"),
        ("--factor", "inf", "--factor must be a finite number > 0 and <= 100, got inf"),
        ("--factor", "0", "--factor must be a finite number > 0 and <= 100, got 0.0"),
    ],
)
def test_a_non_finite_latency_target_is_refused(option, value, message, tmp_path, capsys, no_search):
    line = _search(["specialize", "--lut", "flops", "--out", str(tmp_path / "n"), option, value], capsys)
    assert line == f"error: {message}"


def test_a_nan_row_of_measured_subnets_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("search.elastic.evaluate.SubnetEvaluator.for_supernet", _never("loading the dataset"))
    csv = tmp_path / "subnet_accuracy.csv"
    csv.write_text("subnet,val_top1\nlargest,0.9\nsmallest,nan\n")
    (tmp_path / "supernet").symlink_to(BUNDLED / "fmnist", target_is_directory=True)
    args = ["elastic-predictor", "--supernet", str(tmp_path / "supernet"), "--out", str(tmp_path), "--no-progress"]
    line = _search(args, capsys)
    assert f"{csv}: line 3: val_top1 must be a finite number >= 0 and <= 1, got nan" in line


def test_a_nan_accuracy_cannot_fit_a_predictor():
    space = get_elastic_space("fmnist")
    subnets = [space.largest(), space.smallest(), space.baseline()] * 4
    with pytest.raises(ValueError, match="has accuracy nan; accuracies are fractions in"):
        fit_predictor(space, subnets, [0.9] * 11 + [float("nan")], epochs=1)


# --- issue 39 item 6: tampered files are one line -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "a JSON list, not an object"),
        ({"format": "proxyless-lut/1", "entries": []}, "no 'header' object"),
        ({"format": "proxyless-lut/1", "header": [], "entries": []}, "no 'header' object"),
        ("entries-dict", "'entries' must be a list, got dict"),
        ("entry-list", "an entry must be a JSON object, got [1]"),
        ("threads-text", "bad LUT header: threads must be an integer, got 'one'"),
    ],
)
def test_a_tampered_table_is_one_line(data, message, tmp_path, capsys):
    table = json.loads(FMNIST_TABLE.read_text())
    if data == "entries-dict":
        data = {**table, "entries": {}}
    elif data == "entry-list":
        data = {**table, "entries": [[1]]}
    elif data == "threads-text":
        data = {**table, "header": {**table["header"], "threads": "one"}}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    line = _search(["latency", "fmnist_proxyless_cpu", "--lut", str(path)], capsys)
    assert line.startswith(f"error: {path}: ") and message in line


@pytest.fixture
def supernet(tmp_path: Path) -> Path:
    """A copy of the bundled fmnist supernet with its predictor."""
    return Path(shutil.copytree(BUNDLED / "fmnist", tmp_path / "supernet"))


def _edit_config(folder: Path, edit) -> Path:
    file = folder / "supernet.json"
    config = json.loads(file.read_text())
    edit(config)
    file.write_text(json.dumps(config))
    return file


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("space"), "'space' must be a JSON string, got nothing"),
        (lambda c: c.update(space_definition="fmnist"), "'space_definition' must be a JSON object, got str"),
        (lambda c: c.update(metadata=[]), "'metadata' must be a JSON object, got list"),
    ],
)
def test_a_tampered_supernet_json_is_one_line(edit, message, supernet):
    file = _edit_config(supernet, edit)
    with pytest.raises(WeightsError, match=f"^{file}: {message}"):
        load_supernet(supernet)


def test_a_supernet_without_its_recipe_is_one_line_before_any_search(supernet, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("search.elastic.specialize.run_search", _never("the search"))
    file = _edit_config(supernet, lambda c: c["metadata"].pop("recipe"))
    args = ["specialize", "--supernet", str(supernet), "--lut", "flops", "--factor", "0.8"]
    line = _search([*args, "--out", str(tmp_path / "net")], capsys)
    assert line == f"error: {file}: metadata.recipe must be an object (the supernet's training recipe)"


def test_a_mistyped_space_definition_is_one_line_for_publish(supernet):
    file = _edit_config(supernet, lambda c: c["space_definition"]["backbone"].update(widths="24,40"))
    with pytest.raises(SupernetFolderError, match=f"^{file}: its space_definition is incomplete .*widths"):
        read_supernet(supernet)


def test_truncated_supernet_tensors_with_a_recomputed_checksum_are_one_line(supernet):
    weights = supernet / "supernet.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4096])
    _edit_config(supernet, lambda c: c.update(weights_sha256=sha256_file(weights)))
    with pytest.raises(WeightsError, match=f"^{weights}: not the tensors of elastic space 'fmnist' \\(.+\\)$"):
        load_supernet(supernet)


def test_a_predictor_of_another_shape_is_one_line(supernet):
    space = get_elastic_space("fmnist")
    fit = PredictorFit(10, 2, 0.01, 0.5, 0.02)
    save_predictor(AccuracyPredictor(features=7), fit, supernet, {"supernet_sha256": "x"})
    with pytest.raises(WeightsError, match=r"predictor.safetensors: not a predictor for elastic space 'fmnist' \("):
        load_predictor(space, supernet)


def test_a_predictor_fit_for_another_supernet_is_refused_by_specialize(supernet, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("search.elastic.specialize.run_search", _never("the search with that predictor"))
    file = supernet / "predictor.json"
    config = json.loads(file.read_text())
    file.write_text(json.dumps({**config, "supernet_sha256": "0" * 64}))
    args = ["specialize", "--supernet", str(supernet), "--lut", "flops", "--factor", "0.8"]
    line = _search([*args, "--out", str(tmp_path / "net")], capsys)
    assert f"{file}: fit for another supernet (sha256 000000000000...)" in line and not (tmp_path / "net").exists()


def test_a_nan_predictor_figure_never_reaches_a_card(supernet):
    file = supernet / "predictor.json"
    config = json.loads(file.read_text())
    config["fit"]["rmse"] = "nan"
    file.write_text(json.dumps(config))
    with pytest.raises(SupernetFolderError, match=f"^{file}: fit.rmse must be a number, got 'nan'"):
        read_supernet(supernet)


@pytest.mark.parametrize("atol", ["0.01", None, -1, 1e308])
def test_export_check_with_a_bad_tolerance_is_one_line(atol, tmp_path, capsys):
    (tmp_path / "report.json").write_text(json.dumps({"format": "proxyless-export/2", "settings": {"atol": atol}}))
    assert export_cli.main(["check", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'report.json'}: atol must be a")


def test_export_with_a_nan_tolerance_is_refused_before_loading(tmp_path, capsys):
    args = ["no-such-model", "--out", str(tmp_path / "x"), "--atol", "nan"]
    assert export_cli.main(args) == 2
    assert capsys.readouterr().err.strip() == "error: options: atol must be a finite number >= 0 and <= 1e+06, got nan"


# --- issue 40 item 8: unclear errors --------------------------------------------------------------------------


def test_a_jpeg_as_a_table_names_the_file(tmp_path, capsys):
    path = tmp_path / "photo.jpg"
    path.write_bytes(JPEG)
    line = _search(["latency", "proxyless_mobile", "--lut", str(path)], capsys)
    assert line.startswith(f"error: {path}: not UTF-8 text (byte 0xff at offset 0)") and "codec" not in line
    with pytest.raises(InputError, match=r"photo\.jpg: not UTF-8 text"):
        read_text(path, "a table")


def test_a_table_of_another_space_gets_the_space_mismatch_message(capsys):
    line = _search(["latency", "fmnist_proxyless_cpu", "--lut", str(IMAGENET_TABLE)], capsys)
    assert line == f"error: {IMAGENET_TABLE} is a table of search space 'imagenet', not 'fmnist'"


def test_export_runtimes_says_ok_or_why_not(capsys):
    assert export_cli.main(["runtimes", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    status = json.loads(lines[-1])
    assert status["torch"] == "ok" and all(isinstance(v, str) and v for v in status.values())
    assert [line.split()[:2] for line in lines[:-1]] == [[k, v.split()[0]] for k, v in status.items()]
    assert "null" not in "\n".join(lines)


def _subparser_help(parser: argparse.ArgumentParser, name: str) -> str:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name].format_help()


@pytest.mark.parametrize("command", ["specialize", "elastic-predictor", "extract"])
def test_help_never_says_the_default_twice(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one option per line
    text = _subparser_help(search_cli.build_parser(), command)
    assert "(default: None)" not in text
    assert not [line for line in text.splitlines() if line.count("default") > 1]


def test_top_level_help_names_every_export_format(capsys):
    assert proxyless_cli.main(["--help"]) == 0
    export_line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("export"))
    for fmt in ("TorchScript", "ONNX", ".pt2", "OpenVINO", "TensorRT", "int8"):
        assert fmt in export_line
