"""Supernet: binarized paths train only the sampled candidates; derived nets carry the supernet's weights."""

import torch
import torch.nn.functional as F

from search.gradient.supernet import Supernet
from search.space import get_space
from zoo.arch import ArchSpec

SPACE = get_space("fmnist")
PATH_A = [0, 3, 5, 2, 6, 1, 6, 5, 4, 6]
PATH_B = [1, 3, 4, 2, 0, 1, 2, 5, 4, 0]


def _candidate_params(net: Supernet, layer: int, cand: int) -> list[torch.nn.Parameter]:
    return list(net.blocks[layer + 1].mobile_inverted_conv.candidate_ops[cand].parameters())


def test_unsampled_candidates_get_no_grad_decay_or_momentum():
    torch.manual_seed(0)
    net = Supernet(SPACE).train()
    opt = torch.optim.SGD(list(net.weight_parameters()), lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for path in (PATH_A, PATH_B):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x, path), y).backward()
        assert net.alpha.grad is None
        opt.step()
    used = {(i, c) for path in (PATH_A, PATH_B) for i, c in enumerate(path) if c < len(_ops(net, i))}
    for i in range(len(net.counts)):
        for c in range(len(_ops(net, i))):
            params = _candidate_params(net, i, c)
            if (i, c) in used:
                assert all(p in opt.state for p in params)
            else:
                assert all(p.grad is None and p not in opt.state for p in params)
    after = net.state_dict()
    prefix = "blocks.{}.mobile_inverted_conv.candidate_ops.{}."
    for i, c in [(0, 2), (4, 3), (9, 5)]:  # never sampled: bit-identical, BN statistics included
        keys = [k for k in after if k.startswith(prefix.format(i + 1, c))]
        assert keys and all(torch.equal(before[k], after[k]) for k in keys)
    keys = [k for k in after if k.startswith(prefix.format(1, 0)) and k.endswith("weight")]
    assert keys and not all(torch.equal(before[k], after[k]) for k in keys)


def _ops(net: Supernet, i: int):
    return net.blocks[i + 1].mobile_inverted_conv.candidate_ops


def test_extract_is_the_sampled_path_with_the_same_weights():
    torch.manual_seed(1)
    net = Supernet(SPACE).eval()
    x = torch.randn(2, 1, 28, 28)
    sub = net.extract(PATH_A, "sub").eval()
    assert torch.allclose(net(x, PATH_A), sub(x), atol=1e-5)
    spec = ArchSpec.from_json(sub.spec.to_json())
    assert SPACE.choices_of(spec) == net.blocks_of(PATH_A)
    assert sum(str(b) == "zero" for b in spec.blocks) == PATH_A.count(6)


def test_probs_mask_padding_and_argmax_derives_a_space_arch():
    net = Supernet(SPACE)
    net.init_alpha(1e-3, torch.Generator().manual_seed(0))
    probs = net.probs()
    assert torch.allclose(probs.sum(1), torch.ones(len(net.counts)))
    assert (probs[~net.valid] == 0).all()
    with torch.no_grad():
        net.alpha[:, 0] += 1.0
    arch = SPACE.arch(net.blocks_of(net.argmax_path()))
    assert all(b.kernel == 3 and b.expand == 3 for b in arch.blocks[1:])
