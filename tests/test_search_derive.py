"""The derived net: the most probable path within the target (exact, against brute force), and a search run whose
argmax exceeds its target deriving such a path."""

import itertools
import json
import math
import random

import pytest

from search.cli import main
from search.gradient.derive import most_probable_within
from search.latency import load_latency_model
from search.space import get_space
from tests.test_search_run import TINY
from zoo.arch import ArchSpec


def _brute_force(probs, costs, fixed, limit):
    best, best_logp = None, -math.inf
    options = [[j for j, p in enumerate(row) if p > 0] for row in probs]
    for path in itertools.product(*options):
        cost = fixed + sum(costs[layer][j] for layer, j in enumerate(path))
        logp = sum(math.log(probs[layer][j]) for layer, j in enumerate(path))
        if cost <= limit and logp > best_logp:
            best, best_logp = list(path), logp
    return best, best_logp


@pytest.mark.parametrize("seed", range(40))
def test_most_probable_within_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    layers, width = rng.randint(1, 6), rng.randint(2, 5)
    probs = [[rng.random() ** 3 if rng.random() > 0.15 else 0.0 for _ in range(width)] for _ in range(layers)]
    for row in probs:
        row[rng.randrange(width)] = rng.random() + 1e-3  # every layer keeps at least one candidate
    costs = [[round(rng.uniform(0, 3), 2) for _ in range(width)] for _ in range(layers)]
    fixed = rng.uniform(0, 1)
    limit = fixed + rng.uniform(0, 2.5 * layers)
    want, want_logp = _brute_force(probs, costs, fixed, limit)
    got = most_probable_within(probs, costs, fixed, limit)
    if want is None:
        assert got is None
        return
    assert got is not None and fixed + sum(costs[layer][j] for layer, j in enumerate(got)) <= limit
    assert sum(math.log(probs[layer][j]) for layer, j in enumerate(got)) == pytest.approx(want_logp, abs=1e-12)


def test_most_probable_within_keeps_an_argmax_that_fits_and_skips_zero_probabilities() -> None:
    probs = [[0.7, 0.3, 0.0], [0.1, 0.9, 0.0]]
    costs = [[2.0, 1.0, 0.0], [3.0, 1.0, 0.0]]  # the p = 0 candidates are free: never taken all the same
    assert most_probable_within(probs, costs, 0.5, 10.0) == [0, 1]
    assert most_probable_within(probs, costs, 0.5, 2.5) == [1, 1]
    assert most_probable_within(probs, costs, 0.5, 2.4) is None
    with pytest.raises(ValueError, match="2 rows of probabilities, 1 of costs"):
        most_probable_within(probs, costs[:1], 0.0, 1.0)


def test_a_search_whose_argmax_exceeds_the_target_derives_the_most_probable_path_within_it(tmp_path, capsys) -> None:
    space = get_space("fmnist")
    matrix, fixed = load_latency_model("flops", space).candidate_matrix(space)
    cheapest = fixed + sum(
        min(matrix[i, : len(space.candidates(layer))].tolist()) for i, layer in enumerate(space.layers())
    )
    target = round(cheapest + 0.5, 3)  # only a few near-cheapest paths fit: the argmax of a short run does not
    args = [a if a != "15" else str(target) for a in TINY]
    assert main(["run", *args, "--loss", "add#linear", "--epochs", "1", "--out", str(tmp_path / "s")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    arch = ArchSpec.from_json((tmp_path / "s" / "arch.json").read_text())
    record = arch.extra["search"]
    assert record["argmax_latency"] > target >= record["predicted_latency"] == result["predicted_latency"]
    assert record["derivation"] == "most probable path within the target (the argmax exceeds it)"
    assert load_latency_model("flops", space).predict_arch(arch).total_ms <= target  # priced afresh
    assert (tmp_path / "s" / "alpha_evolution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # plots the derived net
