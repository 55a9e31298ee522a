"""Elastic supernet: shared weights, exact extraction, the space's subnets, BN recalibration, the stored format."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from random_bn import input_dependent_bn

from search.elastic.space import ELASTIC_SPACES, ElasticSpace, get_elastic_space
from search.elastic.store import WEIGHTS, load_supernet, save_supernet
from search.elastic.supernet import ElasticSupernet, recalibrate_bn
from search.space import SPACES
from zoo.arch import ArchError
from zoo.network import ProxylessNet
from zoo.registry import get_model_info
from zoo.weights import WeightsError

FMNIST = get_elastic_space("fmnist")
ATOL = 1e-5


def _spread(logits: torch.Tensor) -> float:
    """How far the logits move from image to image: an equivalence check within ATOL sees the input only when
    this is far above ATOL."""
    return (logits - logits.mean(0)).abs().max().item()


@pytest.fixture(scope="module")
def supernet() -> ElasticSupernet:
    torch.manual_seed(0)
    net = ElasticSupernet(FMNIST)
    images = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    input_dependent_bn(net, lambda x: net(x, FMNIST.largest()), images)
    return net.eval()


def _subnets() -> list:
    rng = random.Random(1)
    return [FMNIST.largest(), FMNIST.smallest(), FMNIST.baseline(), *(FMNIST.sample(rng) for _ in range(4))]


@pytest.mark.parametrize("index", range(7))
def test_extracted_subnet_computes_the_supernet_function(supernet: ElasticSupernet, index: int) -> None:
    subnet = _subnets()[index]
    net = supernet.extract(subnet).eval()
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(index))
    with torch.no_grad():
        logits = supernet(x, subnet)
        assert _spread(logits) > 100 * ATOL  # precondition: the function depends on the image
        assert torch.allclose(logits, net(x), atol=ATOL, rtol=1e-4)
    assert FMNIST.subnet_of(net.spec) == subnet


def test_subnet_weights_are_slices_of_the_shared_weights(supernet: ElasticSupernet) -> None:
    subnet = FMNIST.subnet((2, 3, 3, 2), (3, 5, 7, 3, 5, 7, 3, 5, 7, 3), (3, 6, 3, 6, 3, 6, 3, 6, 3, 6))
    net = supernet.extract(subnet)
    op = supernet.blocks[2].mobile_inverted_conv  # layer 1: kernel 5, expand 6
    sub = net.blocks[2].mobile_inverted_conv
    mid = round(op.cin * 6)
    assert torch.equal(sub.depth_conv.conv.weight, op.depth_conv.conv.weight[:mid, :, 1:6, 1:6])
    assert torch.equal(sub.inverted_bottleneck.conv.weight, op.inverted_bottleneck.conv.weight[:mid])
    op3 = supernet.blocks[1].mobile_inverted_conv  # layer 0: kernel 3, expand 3 -> first half of the channels
    sub3 = net.blocks[1].mobile_inverted_conv
    half = round(op3.cin * 3)
    assert torch.equal(sub3.point_linear.conv.weight, op3.point_linear.conv.weight[:, :half])
    assert torch.equal(sub3.depth_conv.bn.running_var, op3.depth_conv.bn.running_var[:half])
    # one set of weights: changing the shared kernel's centre changes the small kernel's subnet, not its corner
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        before = supernet(x, subnet)
        w = supernet.blocks[2].mobile_inverted_conv.depth_conv.conv.weight
        saved = w.clone()
        w[:, :, 0, 0] += 1.0  # outside the 5x5 centre crop: no effect on layer 1's k5
        assert torch.equal(supernet(x, subnet), before)
        w[:, :, 3, 3] += 1.0  # the centre: every kernel size sees it
        assert not torch.allclose(supernet(x, subnet), before)
        w.copy_(saved)


def test_training_a_subnet_normalizes_like_its_extracted_net_in_training() -> None:
    """In training each sliced BN uses the batch's statistics and moves its slice of the running ones, exactly as
    the extracted net's own BNs do: the sandwich rule trains the subnets it will later extract."""
    torch.manual_seed(0)
    supernet = ElasticSupernet(FMNIST)
    images = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    input_dependent_bn(supernet, lambda x: supernet(x, FMNIST.largest()), images)
    subnet = FMNIST.subnet((2, 3, 3, 2), (3, 5, 7, 3, 5, 7, 3, 5, 7, 3), (3, 6, 3, 6, 3, 6, 3, 6, 3, 6))
    net = supernet.extract(subnet)
    x = 2 * torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(3)) + 1  # other stats than `images`
    with torch.no_grad():
        stored = supernet.eval()(x, subnet)
        trained = supernet.train()(x, subnet)
        assert (trained - stored).abs().max() > 1e-2  # precondition: batch and stored statistics differ here
        torch.testing.assert_close(trained, net.train()(x), atol=1e-4, rtol=1e-4)
    after, ours = supernet.extract(subnet).state_dict(), net.state_dict()
    for key in (k for k in ours if "running" in k):
        torch.testing.assert_close(after[key], ours[key], msg=key)


def test_the_baseline_is_a_subnet_and_the_space_spans_the_latency_range() -> None:
    base = get_model_info("fmnist_mobilenetv2").arch
    assert FMNIST.subnet_of(base) == FMNIST.baseline()
    assert [str(b) for b in FMNIST.arch(FMNIST.baseline()).blocks] == [str(b) for b in base.blocks]
    from search.latency.predict import load_latency_model

    cpu = load_latency_model("cpu", FMNIST.backbone)
    ms = {name: cpu.predict_arch(FMNIST.arch(getattr(FMNIST, name)())).total_ms for name in ("largest", "smallest")}
    baseline = cpu.predict_arch(base).total_ms
    assert ms["largest"] >= 4 * ms["smallest"]
    assert ms["smallest"] <= 0.4 * baseline and ms["largest"] >= 1.2 * baseline


def test_subnets_are_normalized_and_checked() -> None:
    rng = random.Random(0)
    for _ in range(50):
        s = FMNIST.sample(rng)
        active = set(FMNIST.active(s))
        assert all(s.kernels[i] == 3 and s.expands[i] == 3 for i in range(10) if i not in active)
        assert FMNIST.subnet_of(FMNIST.arch(s)) == s
    with pytest.raises(ArchError, match="depths"):
        FMNIST.subnet((0, 3, 3, 2), (3,) * 10, (6,) * 10)
    with pytest.raises(ArchError, match="kernels must be in"):
        FMNIST.subnet((2, 3, 3, 2), (4,) * 10, (6,) * 10)
    with pytest.raises(ArchError, match="10 layers"):
        FMNIST.subnet((2, 3, 3, 2), (3,) * 9, (6,) * 9)
    with pytest.raises(ArchError, match="unknown elastic space"):
        get_elastic_space("nope")
    other = replace(get_model_info("fmnist_mobilenetv2").arch, stem_channels=8)
    with pytest.raises(ArchError, match="stem and head"):
        FMNIST.subnet_of(other)


def test_min_depths_are_checked() -> None:
    space = replace(SPACES["fmnist"], widths=(24, 40, 80, 96), depths=(2, 3, 3, 2))
    with pytest.raises(ArchError, match="min depths"):
        ElasticSpace("bad", space, min_depths=(0, 1, 1, 1))
    with pytest.raises(ArchError, match="min depths"):
        ElasticSpace("bad", space, min_depths=(1, 4, 1, 1))


def test_recalibration_sets_exact_batch_statistics() -> None:
    torch.manual_seed(0)
    net = ProxylessNet(FMNIST.arch(FMNIST.smallest()))
    batches = [torch.randn(16, 1, 28, 28) * 3 + 1 for _ in range(3)]
    assert recalibrate_bn(net, batches) == 48
    assert not net.training
    first = net.first_conv
    with torch.no_grad():
        feats = [first.conv(x) for x in batches]
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(first.bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(first.bn.running_var, var, rtol=1e-4)
    assert first.bn.momentum == 0.1  # restored


def test_store_round_trip_and_refusals(supernet: ElasticSupernet, tmp_path, monkeypatch) -> None:
    save_supernet(supernet, tmp_path, {"note": "test"})
    loaded, config = load_supernet(tmp_path)
    assert config["metadata"] == {"note": "test"}
    for key, value in supernet.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    other = replace(FMNIST, kernels=(3, 5))
    monkeypatch.setitem(ELASTIC_SPACES, "fmnist", other)
    with pytest.raises(WeightsError, match="another definition"):
        load_supernet(tmp_path)
    monkeypatch.setitem(ELASTIC_SPACES, "fmnist", FMNIST)
    data = bytearray((tmp_path / WEIGHTS).read_bytes())
    data[-1] ^= 1
    (tmp_path / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        load_supernet(tmp_path)


def test_the_bundled_supernet_loads_and_reproduces_its_recorded_validation() -> None:
    """The shipped weights are the ones trained (sha256 checked) and score what their record says (within 3 of the
    5,000 held-out images: thread counts may round a borderline logit the other way)."""
    from search.elastic.evaluate import SubnetEvaluator
    from search.elastic.store import resolve_supernet
    from zoo.datasets import FMNIST_DEFAULT_DIR

    if not (Path(FMNIST_DEFAULT_DIR) / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    supernet, config = load_supernet(resolve_supernet(None, "fmnist"))
    recorded = config["metadata"]["validation"]
    evaluator = SubnetEvaluator.for_supernet(supernet.space, config["metadata"]["recipe"])
    assert evaluator.top1(supernet, supernet.space.baseline()) == pytest.approx(recorded["val_top1_baseline"], abs=6e-4)
