"""The training recipe `proxyless search train` promises (search/train.py's docstring): linear lr warm-up then
cosine decay, label smoothing in the training loss, and an EMA of the weights with a ramped decay. Each test
drives the Trainer (or the EMA) and checks the numbers that come out, so a recipe step that is skipped or
mis-weighted shows, whichever line it is dropped on."""

from __future__ import annotations

import itertools
import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_train_resume import TINY
from torch import nn

from search.training.recipe import EMA
from search.training.train import TrainConfig, Trainer

BATCH, STEPS_PER_EPOCH = 32, 10


@pytest.fixture
def trainer(tmp_path: Path) -> Trainer:
    """A tiny Trainer on synthetic data: 2 epochs of 10 steps, 1 epoch of warm-up."""
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY))
    config = TrainConfig(arch=str(arch), out=str(tmp_path / "run"), dataset="synthetic", epochs=2, batch_size=BATCH)
    torch.manual_seed(0)
    return Trainer(replace(config, limit_train=BATCH * STEPS_PER_EPOCH, warmup_epochs=1.0, progress=False))


def test_lr_warms_up_linearly_then_decays_to_zero(trainer: Trainer) -> None:
    peak = trainer.config.lr * BATCH / 256
    assert trainer.steps_per_epoch == STEPS_PER_EPOCH
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scheduler.step() without optimizer.step()
        for _ in range(trainer.total_steps):
            lrs.append(trainer.optimizer.param_groups[0]["lr"])
            trainer.scheduler.step()
    warm, decay = lrs[:STEPS_PER_EPOCH], lrs[STEPS_PER_EPOCH:]
    assert warm == pytest.approx([peak * (i + 1) / STEPS_PER_EPOCH for i in range(STEPS_PER_EPOCH)])
    assert decay[0] == pytest.approx(peak)
    assert all(a > b for a, b in itertools.pairwise(decay)) and 0 < decay[-1] < 0.05 * peak


def test_training_loss_is_label_smoothed(trainer: Trainer) -> None:
    smoothing = trainer.config.label_smoothing
    assert smoothing == 0.1  # the documented default
    x, y = next(iter(trainer.loader))
    trainer._train_mode()
    with torch.no_grad():
        logits = trainer.net(x)  # train mode: BN uses the batch's statistics, as the step does
    smoothed = F.cross_entropy(logits, y, label_smoothing=smoothing).item()
    plain = F.cross_entropy(logits, y).item()
    assert abs(smoothed - plain) > 1e-3  # the two losses are told apart on this batch
    trainer.train_step(x, y)
    logged = (trainer.sums[0] / trainer.sums[2]).item()
    assert logged == pytest.approx(smoothed, abs=1e-5)


def test_ema_is_the_ramped_exponential_average_of_the_weights() -> None:
    """e_t = d_t e_(t-1) + (1 - d_t) w_t with d_t = min(decay, (1 + t) / (10 + t)); integer buffers copied."""
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.5)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    for t in range(12):  # past the ramp: d reaches 0.5 at t = 8
        with torch.no_grad():
            for p in [*model.parameters(), model[1].running_mean, model[1].running_var]:
                p.copy_(torch.randn_like(p))
            model[1].num_batches_tracked += 1
        ema.update()
        d = min(0.5, (1 + t) / (10 + t))
        for k, v in model.state_dict().items():
            expected[k] = v.clone() if not v.is_floating_point() else d * expected[k] + (1 - d) * v
    got = ema.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, msg=k)
    assert ema.updates == 12 and got["1.num_batches_tracked"].item() == 12
