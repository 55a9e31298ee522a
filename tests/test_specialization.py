"""scripts/specialization.py: the verdict rule, the paired test, and short real runs on the bundled nets."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import create_model, get_model_info
from zoo.datasets import build_eval_dataset
from zoo.evaluate import evaluate, right_answers
from zoo.registry import build_network, spec_from_dict
from zoo.weights import save_pretrained

ROOT = Path(__file__).parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("specialization", ROOT / "scripts" / "specialization.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_specialized_net_wins_only_1_3x_faster_at_equal_or_better_accuracy() -> None:
    s = _script()
    acc = {s.BASELINE: 0.94, "fmnist_proxyless_cpu": 0.94, "fmnist_proxyless_mobile": 0.93}
    acc["fmnist_proxyless_gpu"] = 0.95
    lat = {
        "cpu": {s.BASELINE: 1.0, "fmnist_proxyless_cpu": 0.76, "fmnist_proxyless_mobile": 0.7},
        "mobile": {s.BASELINE: 8.0, "fmnist_proxyless_cpu": 7.0, "fmnist_proxyless_mobile": 6.0},
        "gpu": {s.BASELINE: 1.0, "fmnist_proxyless_cpu": 1.1, "fmnist_proxyless_mobile": 1.2},
    }
    lat["gpu"]["fmnist_proxyless_gpu"] = 0.8
    for hw in ("cpu", "mobile"):
        lat[hw]["fmnist_proxyless_gpu"] = 9.0
    result = s.verdicts(acc, lat)
    assert result["cpu"]["wins"] and not result["cpu"]["fastest"] and result["cpu"]["speedup_vs_baseline"] == 1.316
    assert not result["mobile"]["wins"] and result["mobile"]["fastest"]  # fastest, but 1 point less accurate
    assert result["mobile"]["accuracy_delta_points"] == -1.0
    assert not result["gpu"]["wins"] and result["gpu"]["fastest"]  # more accurate, but only 1.25x faster
    del acc["fmnist_proxyless_gpu"]
    assert set(s.verdicts(acc, lat)) == {"cpu", "mobile"}  # no gpu net: no verdict


def test_each_verdict_quotes_both_nets_seeds() -> None:
    """issue 37: the verdict reads beside each net's seeds; a baseline with seeds stays the baseline."""
    s = _script()
    tables = importlib.import_module("scripts.results_tables")
    seeded = {"protocol": {"seeds": [0, 1], "test_top1_mean_ci": [0.9468, 0.94371, 0.94989]}}
    assert tables.seeds_cell(seeded) == "94.68% [94.37, 94.99] (2 seeds)" and tables.seeds_cell({}) == "one training"
    acc, lat = {s.BASELINE: 0.94, "fmnist_proxyless_cpu": 0.95}, {"cpu": {s.BASELINE: 1.0, "fmnist_proxyless_cpu": 0.5}}
    cells = {s.BASELINE: tables.seeds_cell(seeded), "fmnist_proxyless_cpu": "95.00% [94.7, 95.3] (2 seeds)"}
    result = s.verdicts(acc, lat, seeds=cells)
    assert result["cpu"]["seeds"] == {"net": cells["fmnist_proxyless_cpu"], "baseline": cells[s.BASELINE]}
    figures = {"top1": acc, "size": {n: {"params": 1, "macs": 1} for n in acc}, "hardware": s.HARDWARE}
    figures |= {"latency_ms": {hw: lat["cpu"] for hw in s.HARDWARE}, "specialized": result, "min_speedup": 1.3}
    text = tables.specialization_table(figures)
    assert "a win being at least 1.3x faster at equal or better top-1:" in text
    assert "`fmnist_proxyless_cpu` wins: 2.00x the baseline's speed, +1.00 points of accuracy; over seeds: " \
        "95.00% [94.7, 95.3] (2 seeds) against 94.68% [94.37, 94.99] (2 seeds);" in text  # fmt: skip


def test_mcnemar_weighs_only_the_images_one_net_alone_gets_right() -> None:
    s = _script()
    base = np.array([True] * 10 + [False] * 2 + [True] * 5 + [False] * 3)
    net = np.array([False] * 10 + [True] * 2 + [True] * 5 + [False] * 3)
    # 10 vs 2 discordant images: p = 2 * (C(12,0) + C(12,1) + C(12,2)) / 2**12 = 158 / 4096
    assert s.mcnemar(base, net) == {"baseline_only": 10, "net_only": 2, "images": 20, "p": 0.0386}
    assert s.mcnemar(net, base)["p"] == 0.0386
    assert s.mcnemar(base, base)["p"] == 1.0  # the same answers: no evidence either way
    even = np.array([True] * 3 + [False] * 3)
    assert s.mcnemar(even, ~even)["p"] == 1.0  # 3 vs 3: the two-sided tail sum is capped at 1
    with pytest.raises(ValueError, match="differ in length"):
        s.mcnemar(base, net[:5])
    acc, lat = {s.BASELINE: 0.6, "fmnist_proxyless_cpu": 0.2}, {"cpu": {s.BASELINE: 1.0, "fmnist_proxyless_cpu": 0.5}}
    result = s.verdicts(acc, lat, {s.BASELINE: base, "fmnist_proxyless_cpu": net})
    assert result["cpu"]["paired"]["baseline_only"] == 10
    figures = {"top1": acc, "size": {n: {"params": 1, "macs": 1} for n in acc}, "hardware": s.HARDWARE}
    figures |= {"latency_ms": {hw: lat["cpu"] for hw in s.HARDWARE}, "specialized": result}
    text = importlib.import_module("scripts.results_tables").specialization_table(figures)
    assert "McNemar p = 0.04 on 20 test images: 10 right only by the baseline, 2 only by this net" in text


def test_right_answers_are_each_images_verdict_in_order_and_leave_the_mode_alone() -> None:
    """The paired tests' input: per image, in the loader's order; a planted shuffle or a training-mode forward
    (batch statistics) would break the match with the labels."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).train()
    x = torch.randn(64, 1, 2, 2)
    y = net.eval()(x).argmax(1)
    y[::4] = (y[::4] + 1) % 3  # every fourth image wrong
    net.train()
    batches = [(x[i : i + 16], y[i : i + 16], torch.arange(i, i + 16)) for i in range(0, 64, 16)]
    right = right_answers(net, batches)
    assert right.dtype == np.bool_ and right.tolist() == [i % 4 != 0 for i in range(64)]
    assert net.training


def test_readme_without_markers_is_refused_untouched_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _script()
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    monkeypatch.setattr(s, "load", lambda nets: pytest.fail("measured before checking --readme"))
    argv = ["specialization.py", "fmnist_mobilenetv2", "--out", str(tmp_path / "spec"), "--readme", str(readme)]
    monkeypatch.setattr(sys, "argv", argv)
    assert s.main() == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {readme} needs one <!-- specialization:start --> line followed by one " + (
        "<!-- specialization:end --> line"
    )
    assert readme.read_text() == "no markers here\n"


def test_run_on_the_bundled_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    s = _script()
    if s.BASELINE not in s.bundled():
        pytest.skip("no bundled Fashion-MNIST baseline")
    out = tmp_path / "spec"
    readme = tmp_path / "README.md"
    start, end = importlib.import_module("scripts.results_tables").markers("specialization")
    readme.write_text(f"# x\n\nbefore\n{start}\nold table\n{end}\nafter\n")
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
    assert json.loads(out.with_suffix(".json").read_text()) == figures
    assert out.with_suffix(".png").stat().st_size > 10_000
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\n\nbefore\n") and text.endswith(f"{end}\nafter\n")
    assert row in text and "](spec.png)" in text


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
    assert not (tmp_path / "spec.json").exists()


def test_the_paired_test_on_real_nets_matches_their_accuracies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _script()
    nets = [s.BASELINE, "fmnist_proxyless_cpu"]
    if not set(nets) <= set(s.bundled()):
        pytest.skip("the bundled Fashion-MNIST nets are missing")
    argv = ["specialization.py", *nets, "--out", str(tmp_path / "spec"), "--rounds", "1", "--iters", "3"]
    monkeypatch.setattr(sys, "argv", [*argv, "--limit", "300"])
    assert s.main() == 0
    paired = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["specialized"]["cpu"]["paired"]
    assert paired["images"] == 300 and 0 < paired["p"] <= 1
    top1 = {}
    for name in nets:
        info = get_model_info(name)
        data = build_eval_dataset("fashion-mnist", "test", None, 28, info.mean, info.std, limit=300)
        top1[name] = evaluate(create_model(name, pretrained=True), data).top1
    gap = round(300 * (top1["fmnist_proxyless_cpu"] - top1[s.BASELINE]))
    assert paired["net_only"] - paired["baseline_only"] == gap
    monkeypatch.setattr(sys, "argv", [*argv, "--limit", "0"])
    assert s.main() == 2 and capsys.readouterr().err.strip() == "error: --limit must be >= 1, got 0"


def test_the_pipeline_writes_the_results_page_and_its_tables() -> None:
    """Bundling measures into the results page and then regenerates every table (tests/test_results_tables.py
    checks that what stands there is the generator's)."""
    pipeline = (ROOT / "scripts" / "fmnist_pipeline.py").read_text()
    assert 'RESULTS_PAGE = ROOT / "docs" / "results.md"' in pipeline and '"--readme", str(RESULTS_PAGE)' in pipeline
    assert '"scripts/results_tables.py"' in pipeline
