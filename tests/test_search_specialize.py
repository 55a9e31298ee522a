"""The latency term in the real search loop, on synthetic latency tables: tables that disagree give different nets,
each following its table; a tighter target gives a faster net; 0.5 ms and 80 ms targets behave alike.

The runs differ only in their latency model or target, which reach alpha through the search loss alone: with
``loss = ce`` in its place the disagreeing tables give one net and the tighter target no faster argmax."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from search.gradient.config import SearchConfig
from search.gradient.search import Search
from search.latency import LatencyModel
from search.latency.lut import OpKey
from search.space import get_space

SPACE = get_space("fmnist")


@dataclass
class KernelTable(LatencyModel):
    """A synthetic latency model priced by kernel size: a k3 MBConv costs 1, k5 1.2, k7 ``k7`` (e6: 1.3x e3); the
    zero op is free, stem and head cost 0.1 each; all times ``scale``."""

    k7: float
    scale: float = 1.0
    name: str = "synthetic"

    def op_cost(self, key: OpKey) -> float:
        if key.op == "zero":
            return 0.0
        if key.op != "mbconv":
            return 0.1 * self.scale
        return {3: 1.0, 5: 1.2, 7: self.k7}[key.kernel] * (1.3 if key.expand == 6 else 1.0) * self.scale


def _cheapest(table: KernelTable) -> float:
    """The fastest net's latency: the cheapest candidate in every layer."""
    matrix, fixed = table.candidate_matrix(SPACE)
    layers = SPACE.layers()
    return fixed + sum(min(matrix[i, : len(SPACE.candidates(layer))].tolist()) for i, layer in enumerate(layers))


def _uniform_expected(table: KernelTable) -> float:
    matrix, fixed = table.candidate_matrix(SPACE)
    counts = torch.tensor([len(SPACE.candidates(layer)) for layer in SPACE.layers()], dtype=torch.float32)
    return fixed + float((matrix.sum(1) / counts).sum())


# The tight target is 80 ms at this scale: 0.5 above the dear table's fastest net (5.3), which few nets meet.
SCALE = 80 / (_cheapest(KernelTable(k7=3.0)) + 0.5)
K7_CHEAP, K7_DEAR = KernelTable(k7=0.3, scale=SCALE), KernelTable(k7=3.0, scale=SCALE)
LOOSE = 2 * _uniform_expected(K7_DEAR)  # twice the uniform mixture of the dearer table: never binding
TIGHT = 80.0


@dataclass(frozen=True)
class Run:
    record: dict  # arch.json's extra.search
    ops: list[str]  # the derived net's choice per searchable layer, as block strings
    alpha: torch.Tensor
    history: list[dict]


def _search(out: Path, table: KernelTable, target: float) -> Run:
    """A tiny search on synthetic images with the authors' schedule shape (a warm-up epoch, a search epoch without
    alpha steps, then alpha steps); an alpha step every weight step, with a large lr, to move alpha in few steps."""
    cfg = SearchConfig(
        out=str(out), dataset="synthetic", target="synthetic", target_latency=target,
        batch_size=4, val_size=32, val_batch_size=8, limit_train=64, warmup_epochs=1, epochs=3,
        arch_every=1, arch_lr=0.1, seed=1, tensorboard=False, progress=False,
    )  # fmt: skip
    search = Search(cfg, latency=table)
    search.run()
    search.close()
    arch = json.loads((out / "arch.json").read_text())
    return Run(arch["extra"]["search"], arch["blocks"][1:], search.net.alpha.detach().clone(), search.history)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    tmp = tmp_path_factory.mktemp("specialize")
    small = KernelTable(k7=3.0, scale=SCALE * 0.5 / 80)  # the dear table with its tight target at 0.5 ms
    return {
        "cheap": _search(tmp / "cheap", K7_CHEAP, LOOSE),
        "dear": _search(tmp / "dear", K7_DEAR, LOOSE),
        "tight": _search(tmp / "tight", K7_DEAR, TIGHT),
        "tight_small": _search(tmp / "tight_small", small, 0.5),
    }


def _kernel(block: str) -> int | None:
    return None if block == "zero" else int(block.split("_")[1][1:])


def _latency(table: KernelTable, ops: list[str]) -> float:
    return table.predict_arch(SPACE.arch(ops)).total_ms


@pytest.mark.slow
def test_tables_that_disagree_on_k7_give_different_nets_each_following_its_table(runs: dict[str, Run]) -> None:
    cheap, dear = runs["cheap"], runs["dear"]
    assert cheap.record["target_latency"] == dear.record["target_latency"] == LOOSE
    assert max(_latency(K7_DEAR, run.ops) for run in (cheap, dear)) < LOOSE  # the target never bound either
    differ = [i for i, (a, b) in enumerate(zip(cheap.ops, dear.ops, strict=True)) if a != b]
    assert len(differ) >= 3, (cheap.ops, dear.ops)
    # k7 where it is cheap, rarely where it is dear
    assert sum(_kernel(op) == 7 for op in cheap.ops) >= sum(_kernel(op) == 7 for op in dear.ops) + 2
    # each net is the faster one on its own table
    assert _latency(K7_CHEAP, cheap.ops) < _latency(K7_CHEAP, dear.ops)
    assert _latency(K7_DEAR, dear.ops) < _latency(K7_DEAR, cheap.ops)


@pytest.mark.slow
def test_a_tighter_target_gives_a_faster_net_and_a_faster_argmax(runs: dict[str, Run]) -> None:
    loose, tight = runs["dear"].record, runs["tight"].record
    assert tight["predicted_latency"] <= TIGHT and tight["predicted_latency"] < loose["predicted_latency"]
    # alpha itself moved further: the argmax (before any derivation within the target) is faster too
    assert tight["argmax_latency"] < loose["argmax_latency"]


@pytest.mark.slow
def test_half_a_millisecond_and_80_ms_targets_search_alike(runs: dict[str, Run]) -> None:
    """The same table and target up to a factor of 160: the same alphas and the same net, within its target."""
    big, small = runs["tight"], runs["tight_small"]
    assert small.record["target_latency"] == 0.5 and big.record["target_latency"] == 80.0
    assert torch.allclose(big.alpha, small.alpha, atol=1e-4)
    assert small.ops == big.ops and small.record["derivation"] == big.record["derivation"]
    assert small.record["predicted_latency"] == pytest.approx(big.record["predicted_latency"] / 160, rel=1e-5)
    assert small.record["predicted_latency"] <= 0.5


@pytest.mark.slow
def test_the_first_search_epoch_leaves_alpha_alone_and_the_report_follows_the_entropy(runs: dict[str, Run]) -> None:
    """The authors' schedule: no alpha step in the first search epoch; the convergence report has one entropy row
    per search epoch (1 = uniform), and the argmax changes of the last epoch."""
    history = runs["cheap"].history
    assert [e["phase"] for e in history] == ["warmup", "search", "search", "search"]
    assert history[1]["alpha"] == history[0]["alpha"] != history[2]["alpha"]
    report = runs["cheap"].record["convergence"]
    assert len(report["entropy"]) == 3 and all(len(row) == 10 for row in report["entropy"])
    assert min(report["entropy"][0]) > 0.999 > max(report["entropy"][2])
    assert sum(report["entropy"][2]) < sum(report["entropy"][1])
    assert report["final_mean_entropy"] == pytest.approx(sum(report["entropy"][2]) / 10, abs=1e-4)
    changed = sum(a != b for a, b in zip(history[-2]["argmax"], history[-1]["argmax"], strict=True))
    assert report["argmax_changed_last_epoch"] == changed  # the layers whose argmax op the last epoch changed
