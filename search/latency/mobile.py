"""The published Pixel-1 table (ProxylessNAS ``mobile_trim.yaml``) in our format, and a per-op predictor fitted on it.

The table covers only the ImageNet space at width 1.0, so other shapes (other widths, the fmnist space, the
published proxyless_mobile net whose first stage is 32 wide) need a model. Each op is split into the primitives
it runs (dense conv / linear, depthwise conv, residual add, pooling) and its latency is modelled as

    ms = a * dense MMACs + b * depthwise MMACs + c * M activation elements read and written

fitted by least squares weighted by 1 / ms, so that it minimises relative error (what MAPE measures).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.latency.lut import MAX_MS, Entry, Header, LatencyError, Lut, OpKey, space_config
from search.latency.ops import layer_key
from search.space import get_space
from zoo.inputs import number, read_text

FEATURES = ("dense_mmacs", "depthwise_mmacs", "activation_melems")
_KEY_RE = re.compile(r"^(?P<op>[A-Za-z_0-9]+?)-input:(?P<input>[\dx]+)-output:(?P<output>[\dx]+)(?P<rest>.*)$")


def _hwc(text: str) -> tuple[int, ...]:
    """Authors' HxWxC (or C) to our (C, H, W) (or (C,))."""
    dims = tuple(int(v) for v in text.split("x"))
    return (dims[2], dims[0], dims[1]) if len(dims) == 3 else dims


def parse_authors_key(text: str) -> OpKey:
    """``expanded_conv-input:56x56x24-output:28x28x40-expand:3-kernel:5-stride:2-idskip:0`` and the like."""
    m = _KEY_RE.match(text)
    if not m:
        raise LatencyError(f"unrecognised entry {text!r} in the mobile table")
    inp, out = _hwc(m["input"]), _hwc(m["output"])
    params = dict(re.findall(r"-(\w+):(\d+)", m["rest"]))
    if m["op"] == "Conv":  # the stem: 3x3, stride from the shapes
        return OpKey("stem", inp, out, kernel=3, stride=inp[1] // out[1])
    if m["op"] == "Conv_1":
        return OpKey("feature_mix", inp, out)
    if m["op"] == "Logits":  # global pool + linear, fed by the feature mix output
        return OpKey("classifier", inp, out)
    if m["op"] == "expanded_conv":
        missing = [k for k in ("kernel", "expand", "stride", "idskip") if k not in params]
        if missing:
            raise LatencyError(f"mobile table entry {text!r} lacks {', '.join(missing)}")
        return OpKey(
            "mbconv",
            inp,
            out,
            kernel=int(params["kernel"]),
            expand=int(params["expand"]),
            stride=int(params["stride"]),
            skip=params["idskip"] == "1",
        )
    raise LatencyError(f"unrecognised op {m['op']!r} in the mobile table entry {text!r}")


def _parse_yaml(text: str) -> dict[str, dict[str, float]]:
    """The file's flat two-level YAML (``key:`` then indented ``count/mean/var``), read without a YAML library."""
    table: dict[str, dict[str, float]] = {}
    current: dict[str, float] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if not line.startswith(" ") and line.rstrip().endswith(":"):
            current = table.setdefault(line.rstrip()[:-1], {})
        elif current is not None and ":" in line:
            name, value = line.split(":", 1)
            current[name.strip()] = _yaml_number(value, n)
        else:
            raise LatencyError(f"mobile table line {n} is not 'key:' or '  field: number': {line!r}")
    return table


def _yaml_number(text: str, line: int) -> float:
    """A field's value: finite and in [0, ``MAX_MS``] (counts, means in ms and variances all are)."""
    try:
        return number(float(text), f"mobile table line {line}", 0.0, MAX_MS)
    except ValueError:
        raise LatencyError(f"mobile table line {line}: {text.strip()!r} is not a finite number in [0, 1e6]") from None


def _stats(raw: dict[str, dict[str, float]], text: str) -> tuple[float, float, int]:
    """(mean ms, std ms, count) of one published entry."""
    stats = raw[text]
    missing = [k for k in ("mean", "var", "count") if k not in stats]
    if missing:
        raise LatencyError(f"mobile table entry {text!r} lacks {', '.join(missing)}")
    return stats["mean"], float(np.sqrt(stats["var"])), int(stats["count"])


def convert_mobile_table(path: str | Path) -> Lut:
    """The published Pixel-1 table as a ``proxyless-lut/1`` table of the imagenet space (means; no medians);
    a fault in the file is one line naming it."""
    text = read_text(path, "the authors' mobile_trim.yaml")
    try:
        return _convert(_parse_yaml(text))
    except LatencyError as e:
        raise LatencyError(f"{path}: {e}") from None


def _convert(raw: dict[str, dict[str, float]]) -> Lut:
    space = get_space("imagenet")
    header = Header(
        space="imagenet",
        space_config=space_config(space),
        device="Google Pixel 1",
        device_kind="mobile",
        runtime="tflite",
        runtime_version="not published",
        threads=1,
        batch=1,
        date="2018 (published with ProxylessNAS)",
        statistic="mean",
        source="ProxylessNAS authors' mobile_trim.yaml (MIT License), converted; median not published",
        notes={"threads": "not published; 1 assumed", "std_ms": "sqrt of the published variance"},
    )
    lut = Lut(header)
    for text in raw:
        mean, std, n = _stats(raw, text)
        lut.add(Entry(parse_authors_key(text), 1, mean, None, std, n))
    for layer in space.layers():
        if layer.residual:  # the skipped layer runs nothing on the phone either
            zero = layer_key(layer, space.candidates(layer)[-1])
            lut.add(Entry(zero, 1, 0.0, None, 0.0, 0))
    return lut


def op_features(key: OpKey) -> np.ndarray:
    """(dense MMACs, depthwise MMACs, M activation elements read + written) over the primitives the op runs."""
    cin = key.input[0]
    prims: list[tuple[str, int, int]] = []  # (kind, macs, elements in + out)
    if key.op in ("stem", "feature_mix"):
        out = key.output[0] * key.output[1] * key.output[2]
        prims.append(("dense", out * cin * key.kernel**2 if key.op == "stem" else out * cin, _n(key.input) + out))
    elif key.op == "classifier":
        prims.append(("pool", 0, _n(key.input) + cin))
        prims.append(("dense", cin * key.output[0], cin + key.output[0]))
    elif key.op == "mbconv":
        size, mid, cout = key.input[1], cin * key.expand, key.output[0]
        out_hw = key.output[1] * key.output[2]
        if key.expand != 1:
            prims.append(("dense", size * size * cin * mid, size * size * (cin + mid)))
        prims.append(("dw", out_hw * mid * key.kernel**2, size * size * mid + out_hw * mid))
        prims.append(("dense", out_hw * mid * cout, out_hw * (mid + cout)))
        if key.skip:
            prims.append(("add", 0, 3 * out_hw * cout))
    dense = sum(m for kind, m, _ in prims if kind == "dense")
    dw = sum(m for kind, m, _ in prims if kind == "dw")
    mem = sum(e for _, _, e in prims)
    return np.array([dense, dw, mem], dtype=np.float64) / 1e6


def _n(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape))


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    w = 1.0 / y
    coef, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
    return coef


@dataclass(frozen=True)
class MobilePredictor:
    """Per-op latency from op features; ``coef`` in ms per unit of each of ``FEATURES``."""

    coef: tuple[float, ...]

    @classmethod
    def fit(cls, entries: list[Entry]) -> MobilePredictor:
        timed = [e for e in entries if e.count > 0]
        if not timed:
            raise LatencyError("the mobile table has no timed entries to fit the predictor on")
        bad = next((e for e in timed if e.mean_ms <= 0), None)
        if bad is not None:  # weights are 1 / ms: a timed op must have taken some time
            raise LatencyError(
                f"mobile table entry {bad.key} is timed (count {bad.count}) but has mean {bad.mean_ms} ms"
            )
        x = np.stack([op_features(e.key) for e in timed])
        return cls(tuple(float(c) for c in _fit(x, np.array([e.mean_ms for e in timed]))))

    def predict(self, key: OpKey) -> float:
        return float(op_features(key) @ np.array(self.coef)) if key.op != "zero" else 0.0


@dataclass(frozen=True)
class LooReport:
    """Leave-one-out: each timed entry predicted by a model fitted on the other entries."""

    keys: list[OpKey]
    measured: np.ndarray
    predicted: np.ndarray

    @property
    def ape(self) -> np.ndarray:
        return np.abs(self.predicted - self.measured) / self.measured

    def summary(self) -> dict[str, float | int]:
        return {
            "n": len(self.keys),
            "loo_mape": round(float(self.ape.mean()), 4),
            "loo_median_ape": round(float(np.median(self.ape)), 4),
            "loo_max_ape": round(float(self.ape.max()), 4),
        }


def leave_one_out(lut: Lut) -> LooReport:
    timed = [e for e in lut.entries.values() if e.count > 0]
    predicted = [MobilePredictor.fit(timed[:i] + timed[i + 1 :]).predict(e.key) for i, e in enumerate(timed)]
    return LooReport([e.key for e in timed], np.array([e.mean_ms for e in timed]), np.array(predicted))
