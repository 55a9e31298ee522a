"""Binary-gate estimators against the closed form, and the latency term's gradient on every alpha."""

import math

import pytest
import torch

from search.gradient.gates import LayerGate, frozen_bn_stats, plan_gates, rescale_pairs
from search.gradient.objective import LatencyObjective, ObjectiveError
from search.gradient.supernet import MixedBlock, Supernet
from search.latency import load_latency_model
from search.space import Layer, get_space

LAYER = Layer(index=0, in_channels=4, out_channels=4, stride=1, input_size=6, residual=True)


def _toy(seed: int = 0):
    """A 7-candidate mixed block (6 MBConvs + zero), an input, and a random linear loss L = <w, y>."""
    torch.manual_seed(seed)
    cands = get_space("fmnist").candidates(LAYER)
    block = MixedBlock(LAYER, cands, 1e-3, 0.1).train()
    x, w = torch.randn(3, 4, 6, 6), torch.randn(3, 4, 6, 6)
    alpha = torch.nn.Parameter(torch.randn(len(cands)))
    return block, x, w, alpha


def _outputs(block: MixedBlock, x: torch.Tensor) -> list[torch.Tensor]:
    """o_j(x) of every candidate, computed directly (the zero op's output is 0)."""
    op = block.mobile_inverted_conv
    with torch.no_grad(), frozen_bn_stats(block):
        return [c(x) for c in op.candidate_ops] + [torch.zeros_like(x)]


@pytest.mark.parametrize("active", [0, 3, 6])  # 6 = the zero op
def test_full_v2_gradient_matches_closed_form(active):
    block, x, w, alpha = _toy()
    probs = torch.softmax(alpha, 0)
    y = block(x, active, LayerGate(active, tuple(range(7)), probs))
    outs = _outputs(block, x)
    assert torch.allclose(y, x + outs[active], atol=1e-6)  # forward = the sampled path alone
    (w * y).sum().backward()

    p = probs.detach()
    g = torch.stack([(w * o).sum() for o in outs])  # dL/dg_j
    expected = torch.stack([sum(g[j] * p[j] * (float(i == j) - p[i]) for j in range(7)) for i in range(7)])
    assert torch.allclose(alpha.grad, expected, rtol=1e-4, atol=1e-6)

    # the same through autograd: softmax-weighted sum evaluated at the binary gate (straight-through)
    alpha2 = alpha.detach().clone().requires_grad_(True)
    p2 = torch.softmax(alpha2, 0)
    gates = torch.nn.functional.one_hot(torch.tensor(active), 7).float() + p2 - p2.detach()
    (w * (x + sum(gates[j] * outs[j] for j in range(7)))).sum().backward()
    assert torch.allclose(alpha.grad, alpha2.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("active", "other"), [(1, 4), (6, 2), (5, 6)])
def test_two_mode_gradient_matches_pair_formula(active, other):
    block, x, w, alpha = _toy(1)
    pair = [active, other]
    q = torch.softmax(alpha[pair], 0)
    y = block(x, active, LayerGate(active, (active, other), q))
    (w * y).sum().backward()
    outs = _outputs(block, x)
    g = [(w * outs[k]).sum() for k in pair]
    qd = q.detach()
    expected = torch.zeros(7)
    for i in range(2):
        expected[pair[i]] = sum(g[j] * qd[j] * (float(i == j) - qd[i]) for j in range(2))
    assert torch.allclose(alpha.grad, expected, rtol=1e-4, atol=1e-6)
    assert alpha.grad[pair].abs().min() > 0  # both of the pair learn, the zero op included


def test_recompute_leaves_bn_running_stats_alone():
    block, x, w, alpha = _toy(2)
    before = {k: v.clone() for k, v in block.state_dict().items() if "running" in k}
    probs = torch.softmax(alpha, 0)
    (w * block(x, 0, LayerGate(0, tuple(range(7)), probs))).sum().backward()
    after = block.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert changed and all(k.startswith("mobile_inverted_conv.candidate_ops.0.") for k in changed)


def test_rescale_pairs_keeps_unsampled_probabilities():
    torch.manual_seed(3)
    alpha = torch.randn(4, 7)
    pairs = torch.tensor([[0, 5], [6, 1], [2, 3], [4, 0]])
    before = torch.softmax(alpha, 1)
    old = alpha.gather(1, pairs)
    alpha.scatter_(1, pairs, old + torch.randn(4, 2))  # what an optimizer step does to the pair
    rescale_pairs(alpha, pairs, old)
    after = torch.softmax(alpha, 1)
    mask = torch.ones(4, 7, dtype=torch.bool).scatter_(1, pairs, False)
    assert torch.allclose(after[mask], before[mask], atol=1e-6)
    assert torch.allclose(after.gather(1, pairs).sum(1), before.gather(1, pairs).sum(1), atol=1e-6)
    assert not torch.allclose(after.gather(1, pairs), before.gather(1, pairs))


def _objective(space, loss="mul#log", target=20.0):
    matrix, fixed = load_latency_model("flops", space).candidate_matrix(space)
    return LatencyObjective(matrix, fixed, target, loss)


@pytest.mark.parametrize("loss", ["mul#ratio", "mul#log", "add#linear"])
def test_latency_gradient_reaches_every_alpha_including_zero(loss):
    space = get_space("fmnist")
    net = Supernet(space)
    net.init_alpha(1e-3, torch.Generator().manual_seed(0))
    lat = _objective(space, loss).expected(net.probs())
    lat.backward()
    grad = net.alpha.grad
    assert (grad[net.valid] != 0).all()
    assert (grad[~net.valid] == 0).all()
    zero_cols = [i for i, c in enumerate(net.candidates) if c[-1].zero]
    assert zero_cols and all(grad[i, net.counts[i] - 1] < 0 for i in zero_cols)  # descent raises p(zero)


@pytest.mark.parametrize("mode", ["two", "full_v2"])
def test_alpha_step_with_zero_active_keeps_latency_gradient(mode):
    """The flaw elsewhere: when the zero op is the sampled path its alpha gradient is dropped."""
    space = get_space("fmnist")
    torch.manual_seed(0)
    net = Supernet(space).train()
    net.init_alpha(1e-3, torch.Generator().manual_seed(0))
    with torch.no_grad():  # make the zero op (and, in two mode, a pair containing it) near-certain
        for i, n in enumerate(net.counts):
            net.alpha[i, n - 1] += 8.0 if space.candidates(space.layers()[i])[-1].zero else 0.0
    probs = net.probs()
    plans, _ = plan_gates(mode, probs, probs.detach(), net.counts, torch.Generator().manual_seed(1))
    zero_layers = [i for i, c in enumerate(net.candidates) if c[-1].zero]
    assert all(plans[i].active == net.counts[i] - 1 for i in zero_layers)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    ce = torch.nn.functional.cross_entropy(net(x, [p.active for p in plans], plans), y)
    loss, _ = _objective(space)(ce, probs)
    loss.backward()
    assert all(net.alpha.grad[i, net.counts[i] - 1] != 0 for i in zero_layers)


def test_mul_log_refuses_targets_at_or_below_one_unit():
    with pytest.raises(ObjectiveError, match="use --loss mul#ratio"):
        _objective(get_space("fmnist"), "mul#log", 0.8)


def test_hinge_pushes_latency_only_above_target():
    space = get_space("fmnist")
    net = Supernet(space)
    net.init_alpha(1e-3, torch.Generator().manual_seed(0))
    expected = _objective(space).expected(net.probs()).detach().item()
    ce = torch.tensor(1.0)
    for target, pushes in ((expected * 0.8, True), (expected * 1.2, False)):
        net.alpha.grad = None
        loss, _ = _objective(space, "add#hinge", target)(ce, net.probs())
        loss.backward()
        assert bool((net.alpha.grad[net.valid] != 0).all()) is pushes
        assert pushes or (loss.detach().item() == 1.0 and not net.alpha.grad.any())


# A hand-made 2-layer latency table: layer 0 has 3 candidates, layer 1 has 2 (its last column padding, p = 0).
TABLE = [[4.0, 2.0, 0.0], [3.0, 1.0, 0.0]]
FIXED = 1.5
PROBS = [[0.5, 0.3, 0.2], [0.25, 0.75, 0.0]]


def _by_hand_expected() -> float:
    """E[LAT] = fixed + sum_l sum_j p_lj LAT_lj, written out."""
    return FIXED + sum(p * t for prow, trow in zip(PROBS, TABLE, strict=True) for p, t in zip(prow, trow, strict=True))


@pytest.mark.parametrize(
    ("loss", "target", "kw"),
    [
        ("mul#ratio", 10.0, {}),  # E[LAT] = 5.6 and the argmax's 6.5 both below T: exponent beta
        ("mul#ratio", 6.0, {"ratio_beta": 0.2, "ratio_beta_over": 2.0}),  # E[LAT] < T < the argmax's: beta_over
        ("mul#ratio", 5.0, {}),  # both above T
        ("mul#log", 3.0, {}),  # E[LAT] = 5.6: above T
        ("mul#log", 20.0, {"scale": 0.5, "beta": 0.6}),  # below T
        ("add#linear", 5.0, {}),
        ("add#linear", 10.0, {"lam": 0.3}),  # below T: a negative (rewarding) term
        ("add#hinge", 5.0, {"lam": 0.4}),  # above T: as add#linear
        ("add#hinge", 10.0, {"lam": 0.4}),  # below T: CE alone
    ],
)
def test_objectives_match_the_papers_formulas(loss, target, kw):
    """mul#ratio: CE * (LAT / T) ** w, LAT = max(E[LAT], argmax latency) with E[LAT]'s gradient, w = ratio_beta up
    to T and ratio_beta_over beyond it (defaults 0.07 / 3);
    mul#log: scale * CE * (log E[LAT] / log T) ** beta (ProxylessNAS, defaults 0.2 / 0.3);
    add#linear: CE + lambda (E[LAT] - T) / T; add#hinge: CE + lambda max(0, E[LAT] - T) / T (default lambda 0.1)."""
    e = _by_hand_expected()
    assert e == pytest.approx(5.6)  # 1.5 + (2 + 0.6 + 0) + (0.75 + 0.75)
    scale, beta, lam = kw.get("scale", 0.2), kw.get("beta", 0.3), kw.get("lam", 0.1)
    ce_value = 1.7
    argmax = FIXED + 4.0 + 1.0  # the most probable candidates: 4 ms and 1 ms
    w = kw.get("ratio_beta_over", 3.0) if argmax > target else kw.get("ratio_beta", 0.07)
    if loss == "mul#ratio":
        want = ce_value * (argmax / target) ** w
    elif loss == "mul#log":
        want = scale * ce_value * (math.log(e) / math.log(target)) ** beta
    elif loss == "add#linear":
        want = ce_value + lam * (e - target) / target
    else:
        want = ce_value + lam * max(0.0, e - target) / target
    objective = LatencyObjective(torch.tensor(TABLE), FIXED, target, loss, **kw)
    probs = torch.tensor(PROBS, requires_grad=True)
    ce = torch.tensor(ce_value, requires_grad=True)
    value, lat = objective(ce, probs)
    assert lat.item() == pytest.approx(e, rel=1e-6)
    assert value.item() == pytest.approx(want, rel=1e-6)
    value.backward()
    # d loss / d p_lj = d loss / d E * LAT_lj, with d loss / d E differentiated by hand
    if loss == "mul#ratio":
        d_e = ce_value * w * (argmax / target) ** (w - 1) / target
        d_ce = (argmax / target) ** w
    elif loss == "mul#log":
        ratio = math.log(e) / math.log(target)
        d_e = scale * ce_value * beta * ratio ** (beta - 1) / (e * math.log(target))
        d_ce = scale * ratio**beta
    else:
        d_e = lam / target if (loss == "add#linear" or e > target) else 0.0
        d_ce = 1.0
    assert probs.grad.tolist() == [[pytest.approx(d_e * t, rel=1e-6, abs=1e-7) for t in row] for row in TABLE]
    assert ce.grad.item() == pytest.approx(d_ce, rel=1e-6)


def test_path_latency_is_fixed_plus_the_chosen_entries():
    objective = LatencyObjective(torch.tensor(TABLE), FIXED, 5.0, "add#linear")
    assert objective.path_latency([0, 1]) == pytest.approx(1.5 + 4.0 + 1.0)
    assert objective.path_latency([2, 0]) == pytest.approx(1.5 + 0.0 + 3.0)
