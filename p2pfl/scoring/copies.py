"""Copies count once: neighbours whose models are near-identical set a yardstick as one model.

The scorer's yardsticks are medians over its anchors (the spread: their distance from the centre; the loss
tolerance: their loss on the own data) and the plain median of the neighbourhood (``badrun.
neighbourhood_ratios``). A median is robust to a minority of *independent* outliers, not to one model
counted several times: attackers that publish copies of one model (``mimic``, Karimireddy et al. 2022:
they copy an honest peer's model to over-represent its data) each count as an anchor. In issue 16's digits
Dirichlet 0.1 6-regular mimic cells (seed 2) three attackers copied observer 4's own published model: three
of its six anchors sat at the centre (``r`` 0.0) with a loss ratio of ~0.8, so the spread fell to half the
nearest honest distance, the loss tolerance to 1.0, and 4's honest neighbour 11 (loss ratio 8-16 on 4's
data, as always on Dirichlet 0.1) looked far and costly at once (``r`` 5-16 from the own mix, 2.4-10 from
the plain median) and was banned at round 28 (round 9 under ``rule = "median"``).

Two honest trained models are never near-identical: each is a round of local training on other data. Over
four digits cells without attackers (Dirichlet 0.3 and 0.1, 4- and 6-regular and the dumbbell, 40 rounds)
and the mimic cell, the closest pair of honest neighbours' models an honest observer ever saw was 0.069
own-update lengths apart (the dumbbell at Dirichlet 0.1, late rounds), and 0.21 of the smaller of the own
update and the lower quartile of the pairwise distances (the bound's scale below); copies are 0 apart.
:func:`copy_groups` groups models within ``copies_ratio`` (0.01) times that scale of each other (single
linkage), and :func:`distinct` keeps one member of each group, in the caller's order (the first: a founder
when the caller lists founders first). No neighbour can shrink the own update to group honest models; the
lower quartile of the pairs caps it for a peer whose own steps are large (:func:`copy_groups`). Copies with
noise beyond the bound are not grouped (docs/scoring.md: at 0.05 own-update lengths all of the false
evictions came back).

Every copy is still scored, excluded and banned on its own evidence. In the mix (``copies_mix_once``,
:func:`share_copies`) a group of copies weighs as its heaviest member alone: three copies of the own model
among six neighbours held the robust mix of issue 16's exposed observer 4 at its own model (24.5 % at the
end against 62-82 % for the other honest peers).

Pure: no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["copy_groups", "distinct", "share_copies"]


def copy_groups(
    models: Mapping[str, NDArray[np.floating[Any]]], scale: float, ratio: float
) -> dict[str, str]:
    """Each peer -> its group's name (the smallest peer name in it): models at most ``ratio`` times the
    smaller of ``scale`` (the own update's length) and the lower quartile of the distances between two of
    these models apart are in one group, and so are models linked by a chain of such pairs. ``ratio`` 0 turns
    grouping off (every peer its own group); a bound of 0 groups exact copies only.

    Why the smaller: the own update alone grows when the own model is far from a converged neighbourhood (a
    peer restarted far off takes steps of 5-20 while its honest neighbours sit 0.04-0.09 apart:
    tests/protocol/test_engine.py's readmission), and they would read as copies of each other; the pairs
    alone are the crowd's, and copies that are most of them set any quantile to 0. Either can only lower the
    bound, so grouping an honest pair needs both to be large against it. Why the lower quartile, not the
    median: colluders far from everything make most pairs long (3 of 7 neighbours make 15 of 21 pairs), and
    with a long own update the median would then group the honest neighbours, leaving the colluders most of
    the anchors; the quartile stays among the honest pairs while they are more than a quarter of them."""
    names = sorted(models)
    group = {p: p for p in names}
    if ratio <= 0 or len(names) < 2:
        return group
    pairs = [(p, q, float(np.linalg.norm(models[p] - models[q]))) for p, q in _pairs(names)]
    bound = ratio * max(0.0, min(scale, float(np.quantile([d for _, _, d in pairs], 0.25))))

    def root(p: str) -> str:
        while group[p] != p:
            p = group[p]
        return p

    for p, q, d in pairs:
        if d <= bound:
            a, b = root(p), root(q)
            group[max(a, b)] = min(a, b)
    return {p: root(p) for p in names}


def _pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    return [(p, q) for i, p in enumerate(names) for q in names[i + 1 :]]


def distinct(peers: Iterable[str], groups: Mapping[str, str]) -> list[str]:
    """``peers`` with only the first member of each group of copies kept (peers ``groups`` does not name are
    their own group)."""
    seen: set[str] = set()
    out: list[str] = []
    for p in peers:
        g = groups.get(p, p)
        if g not in seen:
            seen.add(g)
            out.append(p)
    return out


def share_copies(
    peers: Sequence[str], weights: NDArray[np.float64], groups: Mapping[str, str]
) -> NDArray[np.float64]:
    """``weights`` (one per peer) with each group of copies scaled to weigh together as its heaviest member:
    one model, counted once. The weight taken is dropped, not given to the own row (copies of the own
    model would otherwise gain it back). Returns a new array."""
    w = np.array(weights, dtype=np.float64)
    members: dict[str, list[int]] = {}
    for i, p in enumerate(peers):
        members.setdefault(groups.get(p, p), []).append(i)
    for rows in members.values():
        total = float(w[rows].sum())
        if len(rows) > 1 and total > 0.0:
            w[rows] *= float(w[rows].max()) / total
    return w
