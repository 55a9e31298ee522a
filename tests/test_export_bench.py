"""What ``proxyless export`` measures and holds artefacts to, on stand-in runtimes (no export, seconds to run):
each runtime's latency row comes from its own calls, and the fp32 parity tolerance is tight enough to matter.
The stand-ins advance a fake clock instead of sleeping, so a loaded machine cannot blur their timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from export import bench
from export.bench import BenchOptions, measure
from export.parity import compare
from export.pipeline import ExportOptions, tolerance


@dataclass
class Clock:
    """Seconds that pass only when a stand-in runtime says so."""

    now: float = 0.0

    def perf_counter(self) -> float:
        return self.now


@dataclass
class StandIn:
    """A stand-in runtime whose every call takes ``ms`` on ``clock``."""

    clock: Clock
    ms: float
    device: str = "cpu"
    provider: str = ""
    path: None = None
    note: None = None
    calls: list[int] = field(default_factory=list)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.clock.now += self.ms / 1e3
        self.calls.append(len(x))
        return np.zeros((len(x), 10), np.float32)


def test_each_runtime_is_timed_by_its_own_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(bench, "time", clock)
    source = SimpleNamespace(name="stand_in", input_shape=(1, 4, 4))
    runtimes = {"fast": StandIn(clock, 2.0), "slow": StandIn(clock, 20.0), "mid": StandIn(clock, 7.0)}
    opts = BenchOptions(runtimes=("onnxruntime",), batches=(1, 4), warmup=1, iters=6, rounds=2)
    rows = measure(source, runtimes, opts, progress=False)
    assert [(r.runtime, r.batch) for r in rows] == [(n, b) for b in (1, 4) for n in runtimes]
    for r in rows:
        assert r.p50_ms == pytest.approx(runtimes[r.runtime].ms), r
        assert r.throughput_ips == pytest.approx(r.batch * 1e3 / runtimes[r.runtime].ms), r
    assert all(rt.calls == [1] * 7 + [4] * 7 for rt in runtimes.values())  # 1 warm-up + 6 timed per batch


def _logits(x: np.ndarray) -> np.ndarray:
    """A deterministic classifier of ``x`` with logits spread over several units, like a trained net's."""
    return 5 * x.reshape(len(x), -1)[:, :10]


def test_fp32_parity_fails_logits_off_by_a_thousandth() -> None:
    """`proxyless export`'s default fp32 tolerance: an artefact off by 1e-3 (a wrong BN epsilon, say) fails,
    one off by float rounding passes."""
    x = np.random.default_rng(0).standard_normal((32, 1, 4, 4)).astype(np.float32)
    reference = _logits(x)
    atol, agreement = tolerance("fp32", ExportOptions())
    rounding = compare("rounding", lambda c: _logits(c) + 1e-6, x, reference, atol, agreement)
    off = compare("off", lambda c: _logits(c) + 1e-3, x, reference, atol, agreement)
    assert rounding.ok and off.top1_agreement == 1.0  # the argmax alone cannot tell them apart
    assert not off.ok
    assert not compare("off", lambda c: _logits(c) + 1e-3, x, reference).ok  # compare's own default too
