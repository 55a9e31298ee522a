"""scripts/specialization.py: the verdict rule, and a short real run on the bundled baseline."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from zoo import get_model_info
from zoo.registry import build_network, spec_from_dict
from zoo.weights import save_pretrained

ROOT = Path(__file__).parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("specialization", ROOT / "scripts" / "specialization.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_specialized_net_wins_only_faster_at_equal_or_better_accuracy() -> None:
    s = _script()
    acc = {s.BASELINE: 0.94, "fmnist_proxyless_cpu": 0.94, "fmnist_proxyless_mobile": 0.93}
    lat = {
        "cpu": {s.BASELINE: 1.0, "fmnist_proxyless_cpu": 0.8, "fmnist_proxyless_mobile": 0.7},
        "mobile": {s.BASELINE: 8.0, "fmnist_proxyless_cpu": 7.0, "fmnist_proxyless_mobile": 6.0},
    }
    result = s.verdicts(acc, lat)
    assert set(result) == {"cpu", "mobile"}  # no gpu net: no verdict
    assert result["cpu"]["wins"] and not result["cpu"]["fastest"] and result["cpu"]["speedup_vs_baseline"] == 1.25
    assert not result["mobile"]["wins"] and result["mobile"]["fastest"]  # fastest, but 1 point less accurate
    assert result["mobile"]["accuracy_delta_points"] == -1.0


def test_readme_without_markers_is_refused_untouched(tmp_path: Path) -> None:
    s = _script()
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="needs one"):
        s.into_readme(readme, "| table |", tmp_path / "spec.png")
    assert readme.read_text() == "no markers here\n"


def test_run_on_the_bundled_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    s = _script()
    if s.BASELINE not in s.bundled():
        pytest.skip("no bundled Fashion-MNIST baseline")
    out = tmp_path / "spec"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{s.START}\nold table\n{s.END}\nafter\n")
    argv = ["specialization.py", s.BASELINE, "--out", str(out), "--rounds", "1", "--iters", "3"]
    argv += ["--readme", str(readme)]
    monkeypatch.setattr(sys, "argv", argv)
    assert s.main() == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(figures["latency_ms"]) == set(s.HARDWARE)
    assert all(figures["latency_ms"][hw][s.BASELINE] > 0 for hw in s.HARDWARE)
    info = get_model_info(s.BASELINE)
    assert figures["size"][s.BASELINE] == {"params": info.params, "macs": info.macs}
    row = f"| `{s.BASELINE}` | {info.params / 1e6:.3f}M | {info.macs / 1e6:.1f}M | {100 * info.metrics['top1']:.2f}% |"
    assert row in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert f"`{s.BASELINE}`" in out.with_suffix(".md").read_text()
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\n\nbefore\n") and text.endswith(f"{s.END}\nafter\n")
    assert out.with_suffix(".md").read_text() in text and "](spec.png)" in text


def test_a_net_that_does_not_fit_the_table_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _script()
    cifar = tmp_path / "cifar_net"
    spec = spec_from_dict(
        {"format": "proxyless-arch/1", "name": "c", "blocks": ["mb1_k3_s1_c8"], "in_chans": 3, "input_size": 32}
    )
    meta = {"dataset": "cifar10", "input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}
    meta |= {"categories": [str(i) for i in range(10)], "source": "test", "metrics": {"top1": 0.5}}
    save_pretrained(build_network(spec), cifar, meta)
    cases = [("no_such_net", "error: unknown model 'no_such_net'"), (str(cifar), f"error: {cifar} is a cifar10 net")]
    for net, message in cases:
        monkeypatch.setattr(sys, "argv", ["specialization.py", net, "--out", str(tmp_path / "spec")])
        assert s.main() == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and len(err.splitlines()) == 1, err
    assert "of input 3x32x32; the table is of Fashion-MNIST 1x28x28" in err
    assert not (tmp_path / "spec.md").exists()
