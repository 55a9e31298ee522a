"""Evolutionary search over an elastic space under a latency limit (Once-for-All's ``EvolutionFinder`` design).

A population of subnets within the limit; each generation keeps the best ``parent_ratio`` (elitist), adds
mutants (every gene redrawn with ``mutate_prob``) and uniform crossovers of two parents, each redrawn until it
meets the limit (rejection sampling). ``random_search`` draws the same number of valid subnets at random: the
control that shows evolution earns its keep. ``score`` maps subnets to estimated accuracies (a predictor, or
measured inherited accuracies); ``latency`` prices one subnet.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from search.elastic.space import ElasticSpace, Subnet

Score = Callable[[list[Subnet]], list[float]]
Latency = Callable[[Subnet], float]


class SearchLimitError(ValueError):
    """No subnet of the space can meet the latency limit, or valid subnets are too rare to sample."""


@dataclass(frozen=True)
class EvolutionConfig:
    population: int = 100
    generations: int = 100
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutate_prob: float = 0.1
    seed: int = 0
    max_tries: int = 20_000  # draws per valid subnet before giving up


@dataclass(frozen=True)
class Candidate:
    subnet: Subnet
    latency: float
    score: float


@dataclass
class SearchResult:
    """The best candidate, the final population (best first), and how the search went."""

    best: Candidate
    population: list[Candidate]
    evaluations: int
    best_per_generation: list[float] = field(default_factory=list)
    seconds: float = 0.0


def check_limit(space: ElasticSpace, latency: Latency, limit: float) -> None:
    smallest = latency(space.smallest())
    if smallest > limit:
        raise SearchLimitError(
            f"latency limit {limit:.4g} is below the smallest subnet's {smallest:.4g}: no subnet can meet it"
        )


def _valid(draw: Callable[[], Subnet], latency: Latency, limit: float, tries: int) -> tuple[Subnet, float]:
    for _ in range(tries):
        s = draw()
        ms = latency(s)
        if ms <= limit:
            return s, ms
    raise SearchLimitError(f"no subnet within latency {limit:.4g} in {tries} draws: the limit is too tight")


def mutate(space: ElasticSpace, s: Subnet, rng: random.Random, p: float) -> Subnet:
    pick = lambda value, choices: rng.choice(choices) if rng.random() < p else value  # noqa: E731
    depths = tuple(
        pick(d, list(range(lo, hi + 1))) for d, lo, hi in zip(s.depths, space.min_depths, space.max_depths, strict=True)
    )
    kernels = tuple(pick(k, space.kernels) for k in s.kernels)
    expands = tuple(pick(e, space.expands) for e in s.expands)
    return space.subnet(depths, kernels, expands)


def crossover(space: ElasticSpace, a: Subnet, b: Subnet, rng: random.Random) -> Subnet:
    mix = lambda x, y: tuple(u if rng.random() < 0.5 else v for u, v in zip(x, y, strict=True))  # noqa: E731
    return space.subnet(mix(a.depths, b.depths), mix(a.kernels, b.kernels), mix(a.expands, b.expands))


def _scored(subnets: list[tuple[Subnet, float]], score: Score) -> list[Candidate]:
    scores = score([s for s, _ in subnets])
    return [Candidate(s, ms, float(v)) for (s, ms), v in zip(subnets, scores, strict=True)]


def _child(
    space: ElasticSpace,
    parents: list[Subnet],
    mutant: bool,
    rng: random.Random,
    cfg: EvolutionConfig,
    latency: Latency,
    limit: float,
) -> tuple[Subnet, float]:
    """A mutant of one parent, or a crossover of two, redrawn until it meets the limit."""

    def draw() -> Subnet:
        if mutant:
            return mutate(space, rng.choice(parents), rng, cfg.mutate_prob)
        return crossover(space, rng.choice(parents), rng.choice(parents), rng)

    return _valid(draw, latency, limit, cfg.max_tries)


def evolve(space: ElasticSpace, score: Score, latency: Latency, limit: float, cfg: EvolutionConfig) -> SearchResult:
    """Evolution within ``latency <= limit``; the number of subnets scored is ``evaluations``."""
    check_limit(space, latency, limit)
    started, rng = time.monotonic(), random.Random(cfg.seed)
    n_parents = max(1, round(cfg.parent_ratio * cfg.population))
    n_mutants = round(cfg.mutation_ratio * cfg.population)
    population = _scored(
        [_valid(lambda: space.sample(rng), latency, limit, cfg.max_tries) for _ in range(cfg.population)], score
    )
    evaluations = len(population)
    history = []
    for _ in range(cfg.generations):
        population.sort(key=lambda c: c.score, reverse=True)
        parents = [c.subnet for c in population[:n_parents]]
        history.append(population[0].score)
        children = [
            _child(space, parents, i < n_mutants, rng, cfg, latency, limit) for i in range(cfg.population - n_parents)
        ]
        population = population[:n_parents] + _scored(children, score)
        evaluations += len(children)
    population.sort(key=lambda c: c.score, reverse=True)
    history.append(population[0].score)
    return SearchResult(population[0], population, evaluations, history, time.monotonic() - started)


def random_search(
    space: ElasticSpace, score: Score, latency: Latency, limit: float, evaluations: int, seed: int = 0
) -> SearchResult:
    """The control: ``evaluations`` valid random subnets, the best by score."""
    check_limit(space, latency, limit)
    started, rng = time.monotonic(), random.Random(seed)
    drawn = [_valid(lambda: space.sample(rng), latency, limit, EvolutionConfig.max_tries) for _ in range(evaluations)]
    population = sorted(_scored(drawn, score), key=lambda c: c.score, reverse=True)
    return SearchResult(population[0], population, evaluations, [population[0].score], time.monotonic() - started)
