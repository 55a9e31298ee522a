"""Dynamic batching of one runtime: requests that wait while it runs go through it together next time.

There is no timer: a lone request runs at once (no added latency at low load); under load, every request that
arrived during a run joins the next batch, up to ``max_batch``. One thread calls the runtime, so it is never
called concurrently (a TensorRT execution context is not thread-safe), and on a few CPU cores one batch of N
costs far less than N single runs (PyTorch eager: ~9 ms at batch 1 for a Fashion-MNIST net, per-op overhead).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Job:
    x: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    out: np.ndarray | None = None
    ms: float = 0.0
    batch: int = 0
    error: BaseException | None = None


class Batcher:
    """Call ``run`` ([N, ...] -> [N, ...]) for single inputs [1, ...] from many threads, batching waiting ones."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, name: str = "runtime") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.run, self.max_batch = run, max_batch
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True).start()

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, float, int]:
        """(the output for ``x``, milliseconds of the run it was part of, that run's batch size)."""
        if x.shape[0] != 1:
            raise ValueError(f"one input at a time (batch 1), got batch {x.shape[0]}")
        job = _Job(x)
        self._jobs.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.out is not None
        return job.out, job.ms, job.batch

    @property
    def waiting(self) -> int:
        """Requests queued behind the run in progress: the size of the next batch(es), for monitoring load."""
        return self._jobs.qsize()

    def _loop(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            try:
                t0 = time.perf_counter()
                out = np.asarray(self.run(np.concatenate([j.x for j in jobs])))
                ms = (time.perf_counter() - t0) * 1e3
                if out.shape[0] != len(jobs):
                    raise RuntimeError(f"the runtime returned {out.shape[0]} outputs for a batch of {len(jobs)}")
                for i, job in enumerate(jobs):
                    job.out, job.ms, job.batch = out[i : i + 1], ms, len(jobs)
            except Exception as e:  # every waiting request gets the error; the loop serves the next ones
                for job in jobs:
                    job.error = e
            finally:
                for job in jobs:
                    job.done.set()
