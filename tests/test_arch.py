"""Arch spec round trip and the published ImageNet networks' exact state_dicts."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

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


def _functional(spec: ArchSpec, sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The network of SEMANTICS.md written out with torch.nn.functional from the state_dict alone: conv (padding
    (k - 1) // 2, no bias) -> BN (eps 1e-3, running stats) -> ReLU6; blocks; feature mix; mean pool; linear."""

    def conv_bn(x: torch.Tensor, prefix: str, stride: int, groups: int, act: bool) -> torch.Tensor:
        w = sd[f"{prefix}.conv.weight"]
        x = F.conv2d(x, w, None, stride, (w.shape[-1] - 1) // 2, 1, groups)
        bn = [sd[f"{prefix}.bn.{k}"] for k in ("running_mean", "running_var", "weight", "bias")]
        x = F.batch_norm(x, bn[0], bn[1], bn[2], bn[3], False, 0.0, 1e-3)
        return x.clamp(0, 6) if act else x

    x = conv_bn(x, "first_conv", spec.stem_stride, 1, True)
    for i, b in enumerate(spec.blocks):
        if b.zero:
            continue
        p = f"blocks.{i}.mobile_inverted_conv"
        y = conv_bn(x, f"{p}.inverted_bottleneck", 1, 1, True) if b.expand != 1 else x
        y = conv_bn(y, f"{p}.depth_conv", b.stride, y.shape[1], True)
        y = conv_bn(y, f"{p}.point_linear", 1, 1, False)
        x = y + x if b.residual else y
    x = conv_bn(x, "feature_mix_layer", 1, 1, True).mean((2, 3))
    return F.linear(x, sd["classifier.linear.weight"], sd["classifier.linear.bias"])


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_nets_compute_what_the_authors_configs_say(name: str) -> None:
    spec = ArchSpec.from_json((ARCHS / f"{name}.json").read_text())
    torch.manual_seed(0)
    model = ProxylessNet(spec).double().eval()
    with torch.no_grad():
        for m in model.modules():  # random BN statistics and affine, so a misplaced or skipped BN shows
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
        x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
        ours, reference = model(x), _functional(spec, model.state_dict(), x)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-9)
