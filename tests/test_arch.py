"""Arch spec round trip and the published ImageNet networks' exact state_dicts."""

import re
from pathlib import Path

import pytest
import torch

from zoo.arch import ArchError, ArchSpec, BlockSpec
from zoo.authors_config import load_authors_config
from zoo.network import ProxylessNet, count_macs, count_params

REF = Path(__file__).parent / "data" / "reference"
ARCHS = Path(__file__).parents[1] / "zoo" / "archs"
PUBLISHED = {  # trainable params and MACs (authors' logs: 439.2M / 465.3M / 320.4M)
    "proxyless_cpu": (4_361_648, 439.2),
    "proxyless_gpu": (7_119_848, 465.3),
    "proxyless_mobile": (4_080_512, 320.4),
    "proxyless_mobile_14": (6_857_568, 580.9),
}


def reference_keys(name: str) -> list[tuple[str, list[int]]]:
    lines = (REF / f"{name}.state_dict_keys.txt").read_text().splitlines()[1:]
    return [(k, eval(shape)) for k, shape in (line.split("\t") for line in lines)]  # shapes are int lists


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_state_dict_names_shapes_params(name: str) -> None:
    spec = ArchSpec.from_json((ARCHS / f"{name}.json").read_text())
    model = ProxylessNet(spec)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == reference_keys(name)
    params, macs = PUBLISHED[name]
    assert count_params(model) == params
    assert round(count_macs(spec) / 1e6, 1) == macs
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_authors_config_import_matches_shipped_spec(name: str) -> None:
    assert load_authors_config(REF / f"{name}.config", name) == ArchSpec.from_json((ARCHS / f"{name}.json").read_text())


def test_spec_json_round_trips_exactly() -> None:
    spec = ArchSpec.from_json((ARCHS / "proxyless_mobile.json").read_text())
    text = spec.to_json()
    assert ArchSpec.from_json(text) == spec and ArchSpec.from_json(text).to_json() == text
    assert [str(b) for b in spec.blocks][:3] == ["mb1_k3_s1_c16", "mb3_k5_s2_c32", "mb3_k3_s1_c32_res"]


@pytest.mark.parametrize("bad", ["mb6_k4_s1_c16", "conv3x3", "mb6_k3_s1", "mb0_k3_s1_c8"])
def test_bad_block_strings_are_refused(bad: str) -> None:
    with pytest.raises(ArchError, match="bad block string"):
        BlockSpec.parse(bad)


def test_residual_that_changes_shape_is_refused() -> None:
    with pytest.raises(ArchError, match="identity shortcut but changes shape"):
        ArchSpec("x", (BlockSpec.parse("mb6_k3_s2_c32_res"),), stem_channels=32)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stem_stride": 0}, "stem_stride must be an integer >= 1, got 0"),
        ({"input_size": "28"}, "input_size must be an integer >= 1, got '28'"),
        ({"num_classes": -1}, "num_classes must be an integer >= 1"),
        ({"stem_kernel": 4}, "stem_kernel must be odd"),
        ({"dropout": 1.5}, "dropout must be a number in its range"),
        ({"blocks": [5]}, "every block must be a block string"),
        ({"blocks": "mb1_k3_s1_c16"}, "needs a 'name' and a list of 'blocks'"),
        ({"name": "../../escaped"}, "bad arch name '../../escaped'"),  # it names exported files
    ],
)
def test_bad_spec_fields_are_refused_in_one_line(change: dict, message: str) -> None:
    d = {**ArchSpec.from_json((ARCHS / "proxyless_mobile.json").read_text()).to_dict(), **change}
    with pytest.raises(ArchError, match=re.escape(message)) as e:
        ArchSpec.from_dict(d)
    assert "\n" not in str(e.value)
