"""Bad evidence that leaks instead of resetting: why an intermittent poisoner is evicted.

Counting *consecutive* bad scores (``evict_after`` in a row) lets a poisoner that follows each poisoned
version with an honest one stay forever: one good score resets the run. The scorer therefore also keeps,
per neighbour, a leaky bucket of bad evidence::

    evidence <- memory * evidence + (1 if the version scored bad else 0)

and evicts at ``evidence >= evict_after`` (besides ``evict_after`` consecutive bad ones). ``memory`` in
``[0, 1)`` is the share of the evidence kept per scored version (``bad_memory``); 0 is the consecutive rule
alone (the bucket never holds more than 1 < ``evict_after`` unless ``evict_after`` is 1, which the
consecutive rule already evicts on).

An attacker that poisons one version in ``k``, regularly, peaks at ``1 / (1 - memory**k)`` just after a
poisoned version: :func:`tolerated_period` is the smallest ``k`` it can sustain without eviction, so an
adaptive attacker who knows ``memory`` and ``evict_after`` gets a poisoned share of ``1 / k`` of its scored
versions (and each poisoned version still scores bad: it is dropped from the mix it is scored in with
``drop_bad_at_once``). With the defaults (``memory`` 0.93, ``evict_after`` 4) poisoning every 3rd version
is evicted and every 4th is tolerated (share 1/4). An honest neighbour is evicted only if its scores dip
below ``bad_score`` about once in three versions, sustained. A longer memory catches sparser poisoning but
evicts honest non-IID neighbours: 0.95 (every 5th evicted) added false evictions on Dirichlet 0.1 data
(docs/scoring.md).

What counts as bad evidence is :func:`corroborated`: a score below ``bad_score`` whose distance ratio ``r``
is at least ``evict_distance`` too. The own-data loss and the cosine judge a model *for this peer's data*;
on very non-IID data (Dirichlet 0.1) an honest neighbour that holds other classes fails both, version after
version, while it sits inside the distance spread (measured ``r`` 2-4.8). A ban needs the model to be far from
the neighbourhood as well (sign-flip, Gaussian: ``r`` 5-100); the other signals still take the version out of
the mix (``drop_bad_at_once``) and lower its reputation, so a model bad by loss alone gets no weight either.

Pure: no clock, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np
from numpy.typing import NDArray

__all__ = ["corroborated", "leak", "neighbourhood_ratios", "peak", "tolerated_period"]


def corroborated(score: float, bad_score: float, r: float, evict_distance: float | None) -> bool:
    """Whether a version scored ``score`` at distance ratio ``r`` is bad evidence towards eviction: below
    ``bad_score``, and (unless ``evict_distance`` is ``None``) at ``r >= evict_distance``. A NaN ``r``
    (no spread to measure against) corroborates nothing."""
    if not score < bad_score:
        return False
    return evict_distance is None or r >= evict_distance


def leak(evidence: float, bad: bool, memory: float) -> float:
    """The bucket after one more scored version."""
    return memory * evidence + (1.0 if bad else 0.0)


def peak(memory: float, period: int) -> float:
    """The steady-state bucket just after a poisoned version, for one poisoned version every ``period``
    (a period below 1 counts as 1: every version poisoned)."""
    kept = memory ** max(1, period)
    return math.inf if kept >= 1.0 else 1.0 / (1.0 - kept)


def tolerated_period(memory: float, threshold: float, limit: int = 10_000) -> int | None:
    """The smallest period ``k`` whose :func:`peak` stays below ``threshold`` (the densest regular poisoning
    the rule tolerates for ever), ``None`` when none up to ``limit`` does."""
    for k in range(1, limit + 1):
        if peak(memory, k) < threshold:
            return k
    return None


def neighbourhood_ratios(
    own: NDArray[np.float64],
    models: Mapping[str, NDArray[np.float64]],
    reference: Collection[str] | None = None,
) -> dict[str, float]:
    """Each model's distance from the coordinate-wise median of the own model and ``models`` (every one
    with the same weight), over the median of those distances (the own included). Unlike the scorer's
    ``r``, whose centre is the peer's weighted mix, this centre does not follow the peer's own choices: a
    neighbour the peer holds out of its mix (persistent distance, echo, a bad loss) leaves the mix and so
    drifts away from it, but stays where it is among its peers here.

    ``reference``: the models that set the centre and the spread (default: all); the others are only
    measured against them. The scorer passes its established neighbours, so a crowd of new identities can
    neither drag the centre to a colluder nor widen the spread around it (as for the scorer's own spread)."""
    if not models:
        return {}
    names = sorted(models)
    stack = np.vstack([own[None, :], *(models[p][None, :] for p in names)])
    rows = [0, *(i + 1 for i, p in enumerate(names) if reference is None or p in reference)]
    centre = np.median(stack[rows], axis=0)
    dists = np.linalg.norm(stack - centre, axis=1)
    med = float(np.median(dists[rows]))
    if med > 0:
        return {p: float(dists[i + 1]) / med for i, p in enumerate(names)}
    # half of the models coincide: those are at the centre, any other is infinitely far in this unit
    return {p: (0.0 if dists[i + 1] == 0 else math.inf) for i, p in enumerate(names)}
