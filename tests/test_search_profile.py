"""search.latency.profile: a resumed table keeps the statistic it was measured with."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.latency.lut import LatencyError, Lut
from search.latency.profile import profile_ops
from search.latency.runtimes import make_runner
from search.space import SearchSpace

TINY = SearchSpace(
    name="tiny",
    widths=(8,),
    depths=(1,),
    strides=(1,),
    stem_channels=4,
    stem_stride=1,
    first_block="mb1_k3_s1_c4",
    feature_mix=8,
    in_chans=1,
    input_size=8,
    num_classes=3,
    kernels=(3,),
)
FAST = {"budget_s": 0.003, "warmup_s": 0.0, "progress": False}


def test_resume_refuses_another_statistic(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    with make_runner("torch", "cpu", 1, 1) as runner:
        profile_ops(TINY, runner, out, statistic="min", **FAST)
        before = out.read_text()
        with pytest.raises(LatencyError, match="statistic='min', this profile has 'median'"):
            profile_ops(TINY, runner, out, statistic="median", **FAST)
        assert profile_ops(TINY, runner, out, statistic="min", **FAST).header.statistic == "min"
    assert out.read_text() == before and Lut.load(out).header.statistic == "min"
