"""Sybils of a scenario's ``[sybil]`` section: extra identities added to the plan, their links and data.

Sybils come *after* the ``[topology] peers`` base peers (indices ``peers .. peers + count - 1``), so the base
peers' topology, attacker placement, identities and data are exactly those of the same scenario without
Sybils (its no-attack twin). Each Sybil links to ``degree`` random honest base peers (0: all of them) and
to no other Sybil; its data is a copy (or the first ``slice_fraction``) of one honest peer's, so it has
nothing of its own worth learning. It joins once every honest peer has done ``join_round`` rounds and
leaves once every honest peer has done ``leave_round`` (``simulations.runner.PeerRunner``).
"""

from __future__ import annotations

import dataclasses
import random

from p2pfl.learner import Dataset

from .data import Split
from .scenario import AttackSpec, Scenario, SybilSpec

Graph = list[set[int]]


def extend_graph(graph: Graph, honest: list[int], spec: SybilSpec, seed: int) -> Graph:
    """``graph`` plus ``spec.count`` Sybil nodes linked to honest base peers (a new graph; deterministic)."""
    rng = random.Random(seed * 1_000_003 + 15)
    out = [set(g) for g in graph]
    for _ in range(spec.count):
        me = len(out)
        out.append(set())
        links = honest if not spec.degree or spec.degree >= len(honest) else rng.sample(honest, spec.degree)
        for j in links:
            out[me].add(j)
            out[j].add(me)
    return out


def sybil_split(splits: list[Split], honest: list[int], k: int, spec: SybilSpec) -> Split:
    """The data of the ``k``-th Sybil: honest peer ``honest[k % len(honest)]``'s, whole or a slice."""
    base = splits[honest[k % len(honest)]]
    if spec.data == "copy":
        return base

    def cut(d: Dataset) -> Dataset:
        n = max(1, int(len(d.y) * spec.slice_fraction))
        return Dataset(d.x[:n].copy(), d.y[:n].copy())

    return dataclasses.replace(base, train=cut(base.train), val=cut(base.val))


def sybil_attack(scenario: Scenario) -> AttackSpec:
    """The attack spec a Sybil runs: ``[attack]``'s knobs with ``kind`` = the Sybil behaviour."""
    return dataclasses.replace(scenario.attack, kind=scenario.sybil.kind)
