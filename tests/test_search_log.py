"""search.search_log: a resumed run's TensorBoard curve has one point per epoch, not the replayed ones twice."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from search.search_log import SearchLog

LABELS = [["k3e3", "zero"]]


def _entry(epoch: int, loss: float) -> dict:
    return {"epoch": epoch, "phase": "search", "train_loss": loss, "alpha": [[0.0, 0.0]], "probs": [[0.5, 0.5]]}


def test_a_resume_replaces_the_points_written_after_its_checkpoint(tmp_path: Path) -> None:
    log = SearchLog(tmp_path, LABELS, tensorboard=True)
    history = [_entry(1, 1.0), _entry(2, 0.9)]  # the checkpoint holds epoch 1 only: epoch 2 is replayed
    for n in (1, 2):
        log.record(history[:n])
    log.close()
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
