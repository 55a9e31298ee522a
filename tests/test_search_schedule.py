"""The authors' search setup: alpha's optimizer and schedule by default, he_fout weights, and alpha steps that
touch nothing but alpha (weights, BN statistics and the weight optimizer stay bit-identical)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from search.gradient.config import SearchConfig
from search.gradient.search import Search
from search.gradient.supernet import Supernet
from search.space import get_space


def _search(tmp_path: Path, **kw) -> Search:
    cfg = SearchConfig(
        out=str(tmp_path / "s"), dataset="synthetic", target="flops", target_latency=15.0, batch_size=4,
        val_size=16, limit_train=16, seed=3, tensorboard=False, progress=False, **{"val_batch_size": 4, **kw},
    )  # fmt: skip
    return Search(cfg)


def test_defaults_are_the_authors_schedule_and_the_scale_free_loss(tmp_path: Path) -> None:
    search = _search(tmp_path)
    cfg = search.cfg
    assert (cfg.arch_lr, cfg.arch_every, cfg.arch_skip_epochs, cfg.grad_mode) == (1e-3, 5, 1, "full_v2")
    assert cfg.loss == "mul#ratio" and search.objective.loss_type == "mul#ratio"
    group = search.aopt.param_groups[0]
    assert isinstance(search.aopt, torch.optim.Adam) and group["params"] == [search.net.alpha]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-3, (0.0, 0.999), 1e-8, 0)
    search.close()


def test_no_alpha_step_in_the_first_search_epoch(tmp_path: Path) -> None:
    search = _search(tmp_path, warmup_epochs=0, epochs=2, arch_every=2)
    start = search.net.alpha.detach().clone()
    search.run()
    search.close()
    history, per_epoch = search.history, len(search.train)
    assert torch.equal(torch.tensor(history[0]["alpha"]), start)  # epoch 1: weight steps only
    assert search.alpha_steps == per_epoch // 2 and not torch.equal(search.net.alpha.detach(), start)


def test_skipping_every_search_epoch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--arch-skip-epochs must be >= 0 and below --epochs"):
        _search(tmp_path, epochs=1)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"lr": math.nan}, "--lr must be finite, got nan"),
        ({"arch_lr": math.inf}, "--arch-lr must be finite, got inf"),
        ({"ratio_beta": math.nan}, "--ratio-beta must be finite, got nan"),
        ({"warmup_lr": 0.0}, "--lr, --warmup-lr and --arch-lr must be > 0"),
        ({"momentum": 1.0}, "--momentum, --label-smoothing and --rl-baseline-decay must be in [0, 1)"),
    ],
)
def test_a_non_finite_or_out_of_range_setting_is_refused_before_any_work(
    tmp_path: Path, setting: dict, message: str
) -> None:
    cfg = SearchConfig(out=str(tmp_path / "s"), target="flops", target_latency=15.0, **setting)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        cfg.validate()


def test_supernet_weights_start_he_fout() -> None:
    """Conv weights ~ N(0, 2 / (k * k * out_channels)) (depthwise convs too: groups not divided out), linear weights
    ~ U(+-1/sqrt(in)) with zero bias, BN scale 1 and shift 0."""
    torch.manual_seed(0)
    net = Supernet(get_space("fmnist"))
    standardized = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            std = math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
            standardized.append((m.weight.detach() / std).flatten())
            assert m.bias is None
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
    pooled = torch.cat(standardized)
    assert pooled.numel() > 100_000
    assert pooled.mean().abs() < 0.01 and pooled.std().item() == pytest.approx(1.0, abs=0.01)
    linear = net.classifier.linear
    bound = 1 / math.sqrt(linear.in_features)
    assert not linear.bias.any() and linear.weight.abs().max() <= bound
    assert linear.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform on +-bound


@pytest.mark.parametrize(("algo", "mode", "val_batch"), [("grad", "full_v2", 4), ("grad", "two", 4), ("rl", "", 16)])
def test_an_alpha_step_leaves_weights_bn_statistics_and_the_weight_optimizer_alone(
    tmp_path: Path, algo: str, mode: str, val_batch: int
) -> None:
    search = _search(tmp_path, algo=algo, grad_mode=mode or "full_v2", rl_samples=4, val_batch_size=val_batch)
    x, y = next(iter(search.train))
    search.weight_step(x, y, 0.1, warm=False)  # the weight optimizer gets momentum buffers to keep
    before = {k: v.clone() for k, v in search.net.state_dict().items()}
    weight_state = _weight_state(search)
    search.alpha_step()
    after = search.net.state_dict()
    assert not torch.equal(before["alpha"], after["alpha"])
    changed = [k for k in before if k != "alpha" and not torch.equal(before[k], after[k])]
    assert changed == []  # running means / variances and num_batches_tracked included
    assert all(_same(a, b) for a, b in zip(weight_state, _weight_state(search), strict=True))
    search.close()


def _weight_state(search: Search) -> list[torch.Tensor | None]:
    """Every weight's gradient and momentum buffer (None where it has none)."""
    state = [search.wopt.state.get(p, {}).get("momentum_buffer") for p in search.weights]
    return [None if t is None else t.clone() for t in [p.grad for p in search.weights] + state]


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is b is None or (a is not None and b is not None and torch.equal(a, b))
