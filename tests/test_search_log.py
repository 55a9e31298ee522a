"""search.gradient.search_log: a resumed run's TensorBoard curve has one point per epoch, not the replayed ones twice;
the convergence report."""

from __future__ import annotations

import time
from math import log
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from search.gradient.search_log import NearTie, SearchLog, convergence

LABELS = [["k3e3", "zero"]]


def _entry(epoch: int, loss: float) -> dict:
    return {"epoch": epoch, "phase": "search", "train_loss": loss, "alpha": [[0.0, 0.0]], "probs": [[0.5, 0.5]]}


def test_a_resume_replaces_the_points_written_after_its_checkpoint(tmp_path: Path) -> None:
    log = SearchLog(tmp_path, LABELS, tensorboard=True)
    history = [_entry(1, 1.0), _entry(2, 0.9)]  # the checkpoint holds epoch 1 only: epoch 2 is replayed
    for n in (1, 2):
        log.record(history[:n])
    log.close()
    # Event files sort by name: whole-second timestamp, host, pid, then a per-process counter that sorts as text
    # ("10" < "9"). A real resume is a new process in a later second; start the resumed writer in a new second too,
    # or the order depends on how many writers earlier tests made.
    time.sleep(1.01 - time.time() % 1)
    resumed = SearchLog(tmp_path, LABELS, tensorboard=True, epochs_done=1)
    history = [_entry(1, 1.0), _entry(2, 0.8), _entry(3, 0.7)]
    for n in (2, 3):
        resumed.record(history[:n])
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    points = [(e.step, round(e.value, 3)) for e in events.Scalars("search/train_loss")]
    assert points == [(1, 1.0), (2, 0.8), (3, 0.7)]
    assert (tmp_path / "probs.csv").read_text().count("\n") == 1 + 3 * 2


def test_convergence_reports_entropy_argmax_changes_and_the_derived_nets_near_ties() -> None:
    labels = [["k3e3", "k5e3", "zero"], ["k3e3", "k5e3"], ["k3e3", "k7e6"]]
    history = [
        {"phase": "warmup", "probs": [[1 / 3] * 3, [0.5, 0.5], [0.5, 0.5]]},
        {"phase": "search", "probs": [[0.2, 0.5, 0.3], [0.6, 0.4], [0.3, 0.7]]},
        {"phase": "search", "probs": [[0.5, 0.46, 0.04], [0.9, 0.1], [0.3, 0.7]]},
    ]
    report = convergence(history, labels, [0, 0, 0])  # layer 2: derived within a target, against its argmax
    binary = -(0.6 * log(0.6) + 0.4 * log(0.4)) / log(2)
    assert len(report.entropy) == 2 and report.entropy[0][1] == pytest.approx(binary, abs=1e-4)
    assert report.final_mean_entropy == pytest.approx(sum(report.entropy[1]) / 3, abs=1e-4)
    assert report.argmax_changed_last_epoch == 1  # layer 0: k5e3 -> k3e3
    assert report.near_ties == [NearTie(0, "k3e3", "k5e3", round(log(0.5 / 0.46), 4))]
    assert "near-ties in 1 of 3 layers (0:" in report.warning
    settled = convergence(history[:1] + history[2:], labels, [0, 0, 1])
    assert settled.near_ties[0].layer == 0 and len(settled.near_ties) == 1
    clear = convergence([{"phase": "search", "probs": [[0.8, 0.1, 0.1], [0.9, 0.1], [0.3, 0.7]]}], labels, [0, 0, 1])
    assert clear.near_ties == [] and clear.warning is None and clear.argmax_changed_last_epoch is None
