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

    def __init__(self, fail_on: float | None = None, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.batches: list[list[float]] = []  # the first feature of each input, per run
        self.fail_on = fail_on
        self.gate = gate  # the first run waits for it
        self.inside = 0
        self.most_inside = 0
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.sizes.append(len(x))
            self.batches.append(x[:, 0].tolist())
            if self.gate is not None and len(self.batches) == 1:
                assert self.gate.wait(30)
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
    gate = threading.Event()
    run = SlowDouble(fail_on=-1.0, gate=gate)
    batcher = Batcher(run, max_batch=4)
    values = [-1.0] + [float(i) for i in range(7)]
    with ThreadPoolExecutor(1) as first:
        blocker = first.submit(batcher, np.full((1, 3), 100.0, np.float32))  # holds the runtime until the gate
        deadline = time.monotonic() + 30
        while not run.batches and time.monotonic() < deadline:
            time.sleep(0.001)
        with ThreadPoolExecutor(len(values)) as pool:
            pending = [pool.submit(batcher, np.full((1, 3), v, np.float32)) for v in values]
            while batcher.waiting < len(values) and time.monotonic() < deadline:  # all 8 waiting
                time.sleep(0.001)
            gate.set()
            results = {}
            for v, f in zip(values, pending, strict=True):
                e = f.exception(timeout=30)
                results[v] = e if e is not None else f.result()
        out, _, batch = blocker.result(timeout=30)
    assert (out == 200).all() and batch == 1
    # the 8 waiting requests ran as two batches of 4; exactly the one holding -1 failed, all of it
    assert run.batches[0] == [100.0] and sorted(len(b) for b in run.batches[1:]) == [4, 4]
    assert sorted(v for b in run.batches[1:] for v in b) == sorted(values)
    bad = next(b for b in run.batches[1:] if -1.0 in b)
    errors = [results[v] for v in bad]
    assert all(isinstance(e, RuntimeError) and str(e) == "bad batch" for e in errors), errors
    for v in set(values) - set(bad):
        assert isinstance(results[v], tuple), (v, results[v])
        out, _, batch = results[v]
        assert out.shape == (1, 3) and (out == 2 * v).all() and batch == 4, (v, out, batch)
    out, _, _ = batcher(np.ones((1, 3), np.float32))  # serving goes on
    assert (out == 2).all() and run.batches[-1] == [1.0]


def test_refuses_batched_input_and_bad_max_batch() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(SlowDouble(), max_batch=0)
    with pytest.raises(ValueError, match="batch 1"):
        Batcher(SlowDouble(), max_batch=4)(np.ones((2, 3), np.float32))
