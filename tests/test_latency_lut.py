"""LUT format, lookups and the latency models' contract with the search (no timing here)."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch

from search.latency import LatencyError, expected_latency, load_latency_model
from search.latency import predict as predict_mod
from search.latency.lut import Entry, Header, Lut, OpKey, space_config
from search.latency.ops import arch_ops, space_ops
from search.latency.predict import FlopsModel, TableModel
from search.space import get_space
from zoo.network import count_macs


def _header(space_name: str = "fmnist", **changes: object) -> Header:
    space = get_space(space_name)
    base = Header(
        space=space.name,
        space_config=space_config(space),
        device="test cpu",
        device_kind="cpu",
        runtime="torch",
        runtime_version="0",
        threads=1,
        batch=1,
        date="2025-01-01T00:00:00+00:00",
        clock="thread_cpu",
    )
    return replace(base, **changes)


def _full_table(space_name: str = "fmnist") -> Lut:
    """Every op of the space priced at its MACs in millions (so sums are checkable against count_macs)."""
    lut = Lut(_header(space_name))
    flops = FlopsModel()
    for key in space_ops(get_space(space_name)):
        ms = flops.op_cost(key)
        lut.add(Entry(key, 1, ms, ms, 0.0, 0 if key.op == "zero" else 5))
    return lut


def test_round_trip(tmp_path):
    lut = _full_table()
    lut = lut.with_header(calibration={"overhead_ms": 0.25, "n": 2, "seed": 1, "archs": ["00", "11"]})
    mobile_like = OpKey("classifier", (64, 7, 7), (10,))
    lut.add(Entry(mobile_like, 1, 0.5, None, 0.1, 3))
    path = tmp_path / "t.json"
    lut.save(path)
    again = Lut.load(path)
    assert again.header == lut.header
    assert again.entries == lut.entries
    assert json.loads(path.read_text())["format"] == "proxyless-lut/1"
    assert not list(tmp_path.glob("*.tmp")), "atomic save leaves no temp file"


def test_key_text_is_authors_style():
    key = OpKey("mbconv", (24, 56, 56), (40, 28, 28), kernel=5, expand=3, stride=2, skip=False)
    assert str(key) == "mbconv-input:56x56x24-output:28x28x40-expand:3-kernel:5-stride:2-idskip:0"


def test_bad_files_are_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(LatencyError, match="not a proxyless-lut/1"):
        Lut.load(path)
    with pytest.raises(LatencyError, match="no latency table"):
        Lut.load(tmp_path / "missing.json")


def test_missing_entry_is_named(tmp_path):
    lut = _full_table()
    space = get_space("fmnist")
    arch = space.uniform(6, 7, "big")
    gone = arch_ops(arch).blocks[3][1]
    del lut.entries[gone]
    path = tmp_path / "holey.json"
    lut.save(path)
    model = load_latency_model(str(path), space)
    with pytest.raises(LatencyError, match=f"no entry {gone}"):
        model.predict_arch(arch)
    with pytest.raises(LatencyError, match=f"no entry {gone}"):
        model.candidate_matrix(space)


def test_table_of_another_space_is_refused(tmp_path):
    path = tmp_path / "fmnist.json"
    _full_table("fmnist").save(path)
    with pytest.raises(LatencyError, match="search space 'fmnist', not 'imagenet'"):
        load_latency_model(str(path), get_space("imagenet"))
    redefined = replace(get_space("fmnist"), feature_mix=512)
    with pytest.raises(LatencyError, match="another definition of search space 'fmnist'"):
        load_latency_model(str(path), redefined)


@pytest.mark.parametrize("space_name", ["fmnist", "imagenet"])
def test_matrix_and_arch_sum_agree_with_macs(space_name):
    space = get_space(space_name)
    model = TableModel(_full_table(space_name), "macs-table")
    matrix, fixed = model.candidate_matrix(space)
    layers = space.layers()
    assert matrix.shape == (len(layers), max(len(space.candidates(ly)) for ly in layers))
    rng = random.Random(3)
    for _ in range(3):
        arch = space.sample(rng)
        idx = [space.candidates(ly).index(b) for ly, b in zip(layers, space.choices_of(arch), strict=True)]
        onehot = torch.zeros_like(matrix)
        onehot[torch.arange(len(idx)), torch.tensor(idx)] = 1.0
        total = expected_latency(onehot, matrix, fixed).item()
        assert total == pytest.approx(model.predict_arch(arch).total_ms, rel=1e-5)
        assert total == pytest.approx(count_macs(arch) / 1e6, rel=1e-5)
    for i, layer in enumerate(layers):
        n = len(space.candidates(layer))
        assert torch.all(matrix[i, n:] == 0)
        if layer.residual:
            assert matrix[i, n - 1] == 0, "zero op costs nothing"


def test_expected_latency_gradient():
    space = get_space("fmnist")
    matrix, fixed = FlopsModel().candidate_matrix(space)
    logits = torch.randn(matrix.shape, requires_grad=True)
    probs = torch.softmax(logits, dim=1)
    probs.retain_grad()
    expected_latency(probs, matrix, fixed).backward()
    assert torch.allclose(probs.grad, matrix)
    with pytest.raises(LatencyError, match="shape"):
        expected_latency(probs[:, :3], matrix, fixed)


def test_flops_target_and_calibrated_overhead():
    space = get_space("imagenet")
    model = load_latency_model("flops", space)
    assert model.unit == "MMACs"
    lut = _full_table().with_header(calibration={"overhead_ms": 1.5, "n": 1, "seed": 0, "archs": []})
    fm = get_space("fmnist")
    plain, calibrated = TableModel(_full_table(), "a"), TableModel(lut, "b")
    arch = fm.uniform(3, 3, "x")
    assert calibrated.predict_arch(arch).total_ms == pytest.approx(plain.predict_arch(arch).total_ms + 1.5)
    assert calibrated.candidate_matrix(fm)[1] == pytest.approx(plain.candidate_matrix(fm)[1] + 1.5)


def test_unmeasured_gpu_table_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(predict_mod, "TABLES", tmp_path)
    with pytest.raises(LatencyError, match="no GPU table has been measured yet"):
        load_latency_model("gpu", get_space("fmnist"))
    with pytest.raises(LatencyError, match="neither one of"):
        load_latency_model("tpu", get_space("fmnist"))


@pytest.mark.parametrize("space_name", ["fmnist", "imagenet"])
@pytest.mark.parametrize(
    "target, how",
    [
        ("cpu", ("cpu", "onnxruntime", 1)),
        ("cpu-openvino", ("cpu", "openvino", 1)),
        ("cpu-torch", ("cpu", "torch", 1)),
        ("gpu", ("cuda", "torch", 8)),
    ],
)
def test_shipped_tables_cover_their_space(space_name, target, how):
    space = get_space(space_name)
    if (target, space_name) == ("cpu-openvino", "fmnist"):  # per-request cost dominates its 28x28 ops
        with pytest.raises(LatencyError, match=r"predicts -0\.\d+ ms for the cheapest network of space 'fmnist'"):
            load_latency_model(target, space)
        return
    model = load_latency_model(target, space)
    matrix, fixed = model.candidate_matrix(space)
    h = model.lut.header
    assert (h.device_kind, h.runtime, h.batch, h.threads) == (*how, 1)
    assert h.calibration is not None and h.calibration["n"] >= 10
    assert bool((matrix >= 0).all()) and matrix.sum() > 0
    totals = [model.predict_arch(space.sample(random.Random(i))).total_ms for i in range(3)]
    assert all(t > 0 for t in totals), "a negative calibrated overhead never outweighs a network"
    cheapest = fixed + sum(
        min(row[: len(space.candidates(ly))]) for row, ly in zip(matrix.tolist(), space.layers(), strict=True)
    )
    assert cheapest > 0
    uniform_total = model.predict_arch(space.uniform(3, 3, "u")).total_ms
    assert fixed == pytest.approx(uniform_total - float(matrix[:, 0].sum()), abs=1e-3)
