"""The published Pixel-1 table in our format and the per-op predictor fitted on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from search import cli
from search.latency import load_latency_model
from search.latency.lut import LatencyError, Lut, OpKey
from search.latency.mobile import MobilePredictor, _parse_yaml, leave_one_out, op_features, parse_authors_key
from search.latency.ops import layer_key
from search.latency.predict import MOBILE_TABLE
from search.space import get_space
from zoo.registry import get_model_info


def test_authors_keys_parse():
    key = parse_authors_key("expanded_conv-input:56x56x24-output:28x28x40-expand:3-kernel:5-stride:2-idskip:0")
    assert key == OpKey("mbconv", (24, 56, 56), (40, 28, 28), kernel=5, expand=3, stride=2, skip=False)
    assert parse_authors_key("Conv-input:224x224x3-output:112x112x32") == OpKey(
        "stem", (3, 224, 224), (32, 112, 112), kernel=3, stride=2
    )
    assert parse_authors_key("Logits-input:7x7x1280-output:1000").op == "classifier"
    with pytest.raises(LatencyError, match="unrecognised"):
        parse_authors_key("Pool-input:7x7x1280-output:1280")


def test_yaml_reader():
    text = "Conv-input:224x224x3-output:112x112x32:\n  count: 982\n  mean: 4.08\n  var: 0.25\n"
    assert _parse_yaml(text) == {"Conv-input:224x224x3-output:112x112x32": {"count": 982, "mean": 4.08, "var": 0.25}}
    with pytest.raises(LatencyError, match="line 2"):
        _parse_yaml("Conv:\nnonsense\n")


def test_shipped_table_is_the_published_one_and_covers_the_space():
    lut = Lut.load(MOBILE_TABLE)
    published = [e for e in lut.entries.values() if e.count > 0]
    assert len(published) == 72
    assert lut.header.statistic == "mean" and all(e.median_ms is None for e in published)
    stem = lut.entries[OpKey("stem", (3, 224, 224), (32, 112, 112), kernel=3, stride=2)]
    assert stem.mean_ms == pytest.approx(4.083755600814664) and stem.count == 982
    space = get_space("imagenet")
    keys = [layer_key(ly, b) for ly in space.layers() for b in space.candidates(ly)]
    assert all(k in lut.entries for k in keys), "the width-1.0 ImageNet space is fully in the published table"


def test_predictor_leave_one_out():
    lut = Lut.load(MOBILE_TABLE)
    report = leave_one_out(lut)
    summary = report.summary()
    assert summary["n"] == 72
    assert summary["loo_mape"] < 0.12, summary
    fitted = MobilePredictor.fit(list(lut.entries.values()))
    assert all(c > 0 for c in fitted.coef), "time grows with MACs and memory traffic"
    in_sample = np.mean([abs(fitted.predict(k) - ms) / ms for k, ms in zip(report.keys, report.measured, strict=True)])
    assert in_sample <= summary["loo_mape"]


def test_features_scale_with_the_op():
    small = OpKey("mbconv", (24, 56, 56), (24, 56, 56), kernel=3, expand=3, stride=1, skip=True)
    wide = OpKey("mbconv", (24, 56, 56), (24, 56, 56), kernel=7, expand=6, stride=1, skip=True)
    assert np.all(op_features(wide) >= op_features(small)) and np.any(op_features(wide) > op_features(small))


def test_published_mobile_net_and_other_spaces():
    space = get_space("imagenet")
    model = load_latency_model("mobile", space)
    arch = get_model_info("proxyless_mobile").arch
    b = model.predict_arch(arch)
    assert 60 < b.total_ms < 110, "paper: 78 ms on the Pixel 1"
    assert b.predicted_ops == 3, "only its 32-wide first-stage ops are outside the width-1.0 table"
    fm = get_space("fmnist")
    small = load_latency_model("mobile", fm).predict_arch(fm.uniform(6, 3, "fm"))
    assert 0 < small.total_ms < model.predict_arch(space.uniform(6, 3, "in")).total_ms / 5


def test_cli_mobile_loo(tmp_path, capsys):
    png = tmp_path / "loo.png"
    assert cli.main(["mobile-loo", "--png", str(png), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["n"] == 72 and last["loo_mape"] < 0.12 and 60 < last["proxyless_mobile_ms"] < 110
    assert png.read_bytes()[:4] == b"\x89PNG"
