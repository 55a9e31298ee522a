"""Progressive shrinking (Once-for-All): the students of a training step come from a space that grows elastic one
dimension at a time, so the shared weights first fit the full net, then its kernel crops, then shallower
stages, then narrower expansions, instead of every subnet from the first step (the sandwich rule).

Here it is in place: the largest subnet learns from the labels at every step and teaches the students, as in the
sandwich rule, so the two schedules differ only in which students a step draws. The four phases take equal
shares of the schedule: largest only, + elastic kernel, + elastic depth, + elastic expand ratio.
"""

from __future__ import annotations

import random

from search.elastic.space import ElasticSpace, Subnet

PHASES = ("largest", "kernel", "depth", "expand")


def phase_of(step: int, total_steps: int) -> int:
    """Index into ``PHASES`` of ``step`` (0-based) in a schedule of ``total_steps`` steps."""
    return min(len(PHASES) - 1, step * len(PHASES) // max(1, total_steps))


def progressive_students(space: ElasticSpace, rng: random.Random, phase: int, n: int) -> list[Subnet]:
    """``n`` random subnets elastic only in the dimensions that ``phase`` has opened (none in phase 0)."""
    if phase == 0:
        return []
    top = space.largest()
    students = []
    for _ in range(n):
        s = space.sample(rng)
        depths = s.depths if phase >= PHASES.index("depth") else top.depths
        expands = s.expands if phase >= PHASES.index("expand") else top.expands
        students.append(space.subnet(depths, s.kernels, expands))
    return students
