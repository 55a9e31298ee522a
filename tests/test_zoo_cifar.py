"""The published CIFAR-10 tree-structured PyramidNet: spec, importer, exact state_dict, eval-mode semantics."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.arch import ArchError
from zoo.network import count_params
from zoo.pyramid_tree import (
    LayerSpec,
    PyramidTreeNet,
    TreeArchSpec,
    TreeSpec,
    arch_from_authors_tree_config,
    count_tree_macs,
    load_authors_tree_config,
)

REF = Path(__file__).parent / "data" / "reference"
SHIPPED = Path(__file__).parents[1] / "zoo" / "archs" / "proxyless_cifar.json"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """~2000 tiny ops per forward: on a shared 2-core runner intra-op threads only add contention (30x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cifar() -> PyramidTreeNet:
    return PyramidTreeNet(TreeArchSpec.from_json(SHIPPED.read_text())).eval()


def reference_keys() -> list[tuple[str, list[int]]]:
    lines = (REF / "proxyless_cifar.state_dict_keys.txt").read_text().splitlines()[1:]
    return [(k, json.loads(shape)) for k, shape in (line.split("\t") for line in lines)]


def hooked_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs measured from the shapes a forward pass really produces (an independent check of count_tree_macs)."""
    total = 0

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        per_out = m.in_features if isinstance(m, nn.Linear) else m.in_channels // m.groups * m.weight[0, 0].numel()
        total += out[0].numel() * per_out

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def test_state_dict_matches_authors_and_loads_strictly(cifar: PyramidTreeNet) -> None:
    ref = reference_keys()
    assert [(k, list(v.shape)) for k, v in cifar.state_dict().items()] == ref
    assert count_params(cifar) == 5_731_530
    fake = {k: torch.zeros(shape, dtype=torch.long if k.endswith("tracked") else torch.float) for k, shape in ref}
    cifar.load_state_dict(fake, strict=True)


def test_forward_shape_and_macs(cifar: PyramidTreeNet) -> None:
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert cifar(x).shape == (2, 10)
    assert cifar.spec.head_channels == 400
    assert count_tree_macs(cifar.spec) == hooked_macs(cifar, x[:1]) == 1_213_155_872


def test_spec_json_round_trips_and_importer_reproduces_shipped_spec() -> None:
    text = SHIPPED.read_text()
    spec = TreeArchSpec.from_json(text)
    assert spec.to_json() == text and TreeArchSpec.from_json(spec.to_json()) == spec
    imported = load_authors_tree_config(REF / "proxyless_cifar.config")  # the authors' JSON, through our importer
    assert imported == spec and imported.to_json() == text
    wider = spec.with_classes(100)
    assert wider.num_classes == 100 and wider.blocks == spec.blocks and wider != spec


# ---- semantics on a tiny hand-written config, against a direct functional computation --------------------


def layer(name: str, cin: int, cout: int, bn: bool = False, act: str | None = None, **kw: object) -> dict:
    order = kw.pop("ops_order", "bn_act_weight")
    d = {"name": name, "in_channels": cin, "out_channels": cout, "use_bn": bn, "act_func": act, "ops_order": order}
    return d | {"dropout_rate": 0, "stride": 1, "dilation": 1, "groups": 1, "bias": False, "has_shuffle": False} | kw


def node(cin: int, cout: int, split: str | None, merge: str | None, edges: list, children: list, bn=False) -> dict:
    return {"name": "TreeNode", "in_channels": cin, "out_channels": cout, "split_type": split, "merge_type": merge,
            "has_branch_bn": bn, "path_drop_rate": 0, "edges": edges, "child_nodes": children}  # fmt: skip


TINY = {
    "name": "PyramidTreeNet",
    "blocks": [
        {"name": "TransitionBlock", "layers": [  # post-activation stem, then a BN-only identity
            layer("ConvLayer", 3, 5, True, "relu6", kernel_size=3, ops_order="weight_bn_act"),
            layer("IdentityLayer", 5, 5, True)]},
        {"name": "ResidualTreeBlock", "final_bn": True, "cell_drop_rate": 0.0,
         "shortcut": layer("PoolingLayer", 5, 5, pool_type="avg", kernel_size=2, stride=2),
         "in_bottle": layer("ConvLayer", 5, 6, True, kernel_size=1),
         "cell": node(6, 10, None, None, [
             layer("ConvLayer", 6, 10, True, "relu", kernel_size=3, stride=2, groups=2, has_shuffle=True)], [
             node(10, 10, "split", "concat", [  # 10 channels in 3 chunks: 4, 3, 3
                 layer("DepthConvLayer", 4, 4, True, "relu", kernel_size=3, dilation=2),
                 layer("PoolingLayer", 3, 3, pool_type="max", kernel_size=3),
                 layer("IdentityLayer", 3, 3)], [
                 node(4, 4, "copy", "add", [
                     layer("DepthConvLayer", 4, 4, True, "relu", kernel_size=5),
                     layer("PoolingLayer", 4, 4, pool_type="avg", kernel_size=3)], [None, None]),
                 None, None], bn=True)]),
         "out_bottle": layer("ConvLayer", 10, 12, True, "relu", kernel_size=1)},
        {"name": "TransitionBlock", "layers": [
            layer("PoolingLayer", 12, 12, True, "relu", pool_type="avg", kernel_size=4, stride=4)]},
    ],
    "classifier": {"name": "LinearLayer", "in_features": 12, "out_features": 3, "bias": True, "use_bn": False,
                   "act_func": None, "dropout_rate": 0, "ops_order": "bn_act_weight"},
}  # fmt: skip


def functional_tiny(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """TINY written out from SEMANTICS.md with torch.nn.functional, reading weights by the authors' names."""

    def bn(t: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(t, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                            False, 0.0, 1e-5)  # fmt: skip

    def dconv(t: torch.Tensor, p: str, k: int, d: int = 1) -> torch.Tensor:
        t = F.conv2d(F.relu(bn(t, f"{p}.bn")), sd[f"{p}.depth_conv.weight"], padding=(k - 1) // 2 * d, dilation=d,
                     groups=t.shape[1])  # fmt: skip
        return F.conv2d(t, sd[f"{p}.point_conv.weight"])

    n = x.shape[0]
    x = bn(F.relu6(bn(F.conv2d(x, sd["blocks.0.layers.0.conv.weight"], padding=1), "blocks.0.layers.0.bn")),
           "blocks.0.layers.1.bn")  # fmt: skip
    s = F.avg_pool2d(x, 2, 2)
    h = F.conv2d(bn(x, "blocks.1.in_bottle.bn"), sd["blocks.1.in_bottle.conv.weight"])
    c = "blocks.1.cell"
    y = F.conv2d(F.relu(bn(h, f"{c}.edges.0.bn")), sd[f"{c}.edges.0.conv.weight"], stride=2, padding=1, groups=2)
    y = y.view(n, 2, 5, 4, 4).transpose(1, 2).reshape(n, 10, 4, 4)  # channel shuffle, 2 groups
    s1 = f"{c}.child_nodes.0"
    a, b, d = y[:, :4], y[:, 4:7], y[:, 7:]
    ya = dconv(a, f"{s1}.edges.0", 3, 2)
    za = dconv(ya, f"{s1}.child_nodes.0.edges.0", 5) + F.avg_pool2d(ya, 3, 1, 1, count_include_pad=False)
    yb = F.max_pool2d(b, 3, 1, 1)
    z = [bn(za, f"{s1}.branch_bns.0") + ya, bn(yb, f"{s1}.branch_bns.1") + yb, bn(d, f"{s1}.branch_bns.2") + d]
    r = F.conv2d(F.relu(bn(torch.cat(z, 1), "blocks.1.out_bottle.bn")), sd["blocks.1.out_bottle.conv.weight"])
    x = bn(r, "blocks.1.final_bn") + torch.cat([s, s.new_zeros(n, 7, 4, 4)], 1)  # shortcut padded 5 -> 12
    f = F.avg_pool2d(F.relu(bn(x, "blocks.2.layers.0.bn")), 4, 4).flatten(1)
    return F.linear(f, sd["classifier.linear.weight"], sd["classifier.linear.bias"])


def test_tiny_tree_net_computes_the_documented_function() -> None:
    spec = arch_from_authors_tree_config(TINY, "tiny", input_size=8)
    cell = (
        "(bn_relu_conv_k3_s2_g2_c10_shuffle -> split:concat:bn("
        "bn_relu_dconv_k3_d2_c4 -> copy:add(bn_relu_dconv_k5_c4, avg_k3), max_k3, id))"
    )
    assert str(spec.blocks[1].cell) == cell and str(spec.blocks[0].layers[0]) == "conv_k3_c5_bn_relu6"
    torch.manual_seed(0)
    model = PyramidTreeNet(spec).double().eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():  # random weights and BN statistics, variances kept positive
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("running_var") else torch.randn_like(t) * 0.5)
        x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
        torch.testing.assert_close(model(x), functional_tiny(model.state_dict(), x), rtol=0, atol=1e-10)
    assert count_tree_macs(spec) == hooked_macs(model, x[:1])


# ---- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [("conv_k3", "needs option"), ("bn_relu", "exactly one weight op"), ("avg_k3_c4", "not for 'avg'"),
     ("conv_k3_c4_k5", "repeated"), ("bn_bn_id", "at most one 'bn'"), ("conv_k3_bn_c4", "only .* may come")],
)  # fmt: skip
def test_bad_layer_strings_are_refused(text: str, match: str) -> None:
    with pytest.raises(ArchError, match=match):
        LayerSpec.parse(text)


@pytest.mark.parametrize(
    ("text", "match"),
    [("(id", r"expected '\)'"), ("copy(id, id)", "exactly when"), ("(id, id)", "need a split"),
     ("copy:add(id) x", "trailing"), ("mix:add(id)", "bad node header"), ("(id -> )", "expected 'a word'")],
)  # fmt: skip
def test_bad_tree_strings_are_refused(text: str, match: str) -> None:
    with pytest.raises(ArchError, match=match):
        TreeSpec.parse(text)


def test_specs_that_do_not_fit_are_refused() -> None:
    d = json.loads(SHIPPED.read_text())
    d["blocks"][1]["out_bottle"] = "bn_relu_conv_k1_c8"  # residual narrower than the 16-channel shortcut
    with pytest.raises(ArchError, match=r"blocks\.1: shortcut .* cannot be zero-padded"):
        TreeArchSpec.from_dict(d)
    d = json.loads(SHIPPED.read_text())
    d["blocks"][1]["cell"] = "(bn_relu_conv_k3_c36 -> split:add(id, bn_relu_dconv_k3_c10))"
    with pytest.raises(ArchError, match=r"blocks\.1\.cell\.child_nodes\.0: add of branches with different shapes"):
        TreeArchSpec.from_dict(d)
    with pytest.raises(ArchError, match="unknown keys"):
        TreeArchSpec.from_dict({**d, "format": "proxyless-tree-arch/1", "depth": 3})
    with pytest.raises(ArchError, match="not a proxyless-tree-arch/1"):
        TreeArchSpec.from_dict({**d, "format": "proxyless-arch/1"})


def test_importer_checks_the_authors_channel_claims() -> None:
    bad = json.loads(json.dumps(TINY))
    bad["blocks"][1]["cell"]["child_nodes"][0]["edges"][1]["in_channels"] = 4  # the split gives it 3
    with pytest.raises(ArchError, match=r"blocks\.1\.cell\.child_nodes\.0\.edges\.1: in_channels 4 but 3"):
        arch_from_authors_tree_config(bad, "bad", input_size=8)
    bad = json.loads(json.dumps(TINY))
    bad["classifier"]["in_features"] = 48
    with pytest.raises(ArchError, match="in_features 48 but 12"):
        arch_from_authors_tree_config(bad, "bad", input_size=8)
