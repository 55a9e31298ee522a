"""demo.batching: waiting requests share a run, each gets its own output, errors reach all and serving goes on."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from demo.batching import Batcher


class SlowDouble:
    """2x, taking 30 ms a run; records the batch sizes it was called with."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.sizes: list[int] = []
        self.fail_on = fail_on
        self.inside = 0
        self.most_inside = 0
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.sizes.append(len(x))
            time.sleep(0.03)
            if self.fail_on is not None and (x == self.fail_on).any():
                raise RuntimeError("bad batch")
            return 2 * x
        finally:
            with self.lock:
                self.inside -= 1


def _many(batcher: Batcher, values: list[float]) -> list:
    def one(v: float):
        try:
            return batcher(np.full((1, 3), v, np.float32))
        except RuntimeError as e:
            return e

    with ThreadPoolExecutor(len(values)) as pool:
        return list(pool.map(one, values))


def test_waiting_requests_run_together_and_each_gets_its_own_output() -> None:
    run = SlowDouble()
    batcher = Batcher(run, max_batch=8)
    values = [float(i) for i in range(24)]
    results = _many(batcher, values)
    for v, (out, ms, batch) in zip(values, results, strict=True):
        assert out.shape == (1, 3) and (out == 2 * v).all()
        assert ms >= 30 and 1 <= batch <= 8
    assert sum(run.sizes) == 24 and max(run.sizes) > 1 and max(run.sizes) <= 8
    assert len(run.sizes) < 24 and run.most_inside == 1  # fewer runs than requests, never two at once


def test_max_batch_one_never_batches() -> None:
    run = SlowDouble()
    results = _many(Batcher(run, max_batch=1), [1.0, 2.0, 3.0, 4.0])
    assert run.sizes == [1, 1, 1, 1] and all(batch == 1 for _, _, batch in results)


def test_an_error_reaches_every_request_of_its_batch_and_serving_goes_on() -> None:
    run = SlowDouble(fail_on=-1.0)
    batcher = Batcher(run, max_batch=16)
    results = _many(batcher, [-1.0] + [float(i) for i in range(7)])
    failed = [r for r in results if isinstance(r, RuntimeError)]
    assert failed and isinstance(results[0], RuntimeError)  # the bad one, and whoever shared its run
    out, _, _ = batcher(np.ones((1, 3), np.float32))
    assert (out == 2).all()


def test_refuses_batched_input_and_bad_max_batch() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(SlowDouble(), max_batch=0)
    with pytest.raises(ValueError, match="batch 1"):
        Batcher(SlowDouble(), max_batch=4)(np.ones((2, 3), np.float32))
