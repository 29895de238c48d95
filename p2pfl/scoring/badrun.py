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

What the distance must add for a neighbour that *earned* its place is :class:`DriftTrust`. On Dirichlet 0.1
an honest neighbour whose data hold other classes sits inside the spread for its first settled versions
(``r`` 1-2.5, 4.2 at most) and then drifts away version after version as the rest of the neighbourhood
converges without its classes (measured on the dumbbell: ``r`` 4-24 after round 15, loss 10-110x the own):
it met ``evict_distance`` and was banned. A sign-flipper is far from its first poisoned version (``r`` 9-50
in rounds 6-8 on the dumbbell, 5.8 and more on the 6-regular graph but for one pair at an observer with 3
attackers among 6 neighbours, 3.4). So a neighbour whose first ``trust_versions`` settled versions all sat
below ``evict_distance`` (the scorer passes the smaller of its ratios from the own mix and from the plain
median, as eviction counting needs both) is *trusted*: its gradual drift does not count towards eviction
(``trusted_distance``, ``inf`` by default; a finite one counts it from there on); a version beyond
``evict_distance`` and more than ``jump`` (4) times farther than the nearest of the neighbour's last
``trust_versions`` versions ends the trust for good: the onset of an honest-then-attack poisoner (a
sign-flipper turning after round 10 went from ``r`` 0.9-1.6 to 4.2-7.9 within 2-3 versions, 4.3-5.7x; honest
drift on the dumbbell grew at most 3.4x over 3 versions).

Why no distance bound for a trusted neighbour's drift (it was 32, above the farthest honest neighbour then
measured, ``r`` 21-24): an honest peer with a Byzantine majority among its own neighbours is dragged by them
without bound, version after version (random 4-regular graph, 25 % dissensus: the peer with three attackers
among four neighbours went from ``r`` 3 to 110 at its one honest neighbour in rounds 24-35, 1.3x per version,
and that neighbour banned it at 32: issue 16's false eviction). At that observer its attacker neighbour,
which pushes the same victim, drifted the same way (``r`` 142): no distance or loss tells the two apart, so
any finite bound bans the victim too, given rounds enough. An attacker who knows this earns the trust, then
ramps slower than a jump: it is not banned, but every bad version still leaves the mix at once and its
reputation falls below ``exclude_below`` (weight 0), as for the attacker who stays inside ``evict_distance``;
one that becomes absurd (``hard_reject_factor``, when set) is banned whatever its trust.

Pure: no clock, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np
from numpy.typing import NDArray

from p2pfl.scoring.numbers import median_rows

__all__ = ["DriftTrust", "corroborated", "leak", "neighbourhood_ratios", "peak", "tolerated_period"]


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
    stack = np.stack([own, *(models[p] for p in names)])
    rows = [0, *(i + 1 for i, p in enumerate(names) if reference is None or p in reference)]
    centre = median_rows(stack[rows])  # (np.median's values; the models are finite: absurd ones are out)
    dists = np.linalg.norm(stack - centre, axis=1)
    med = float(median_rows(dists[rows]))
    if med > 0:
        return {p: float(dists[i + 1]) / med for i, p in enumerate(names)}
    # half of the models coincide: those are at the centre, any other is infinitely far in this unit
    return {p: (0.0 if dists[i + 1] == 0 else math.inf) for i, p in enumerate(names)}


class DriftTrust:
    """Per neighbour: whether its first settled versions earned it the trust that gradual drift is data, not
    poisoning (module doc). ``trust_versions`` 0 switches it off (every neighbour is judged at
    ``evict_distance``)."""

    def __init__(self, trust_versions: int, jump: float, trusted_distance: float = math.inf) -> None:
        self.trust_versions, self.jump, self.trusted_distance = trust_versions, jump, trusted_distance
        #: peer -> (settled versions seen while earning, trusted, forfeited, its last ``trust_versions`` r)
        self._state: dict[str, tuple[int, bool, bool, tuple[float, ...]]] = {}

    def trusted(self, peer: str) -> bool:
        state = self._state.get(peer)
        return state is not None and state[1] and not state[2]

    def observe(self, peer: str, r: float, evict_distance: float, *, settled: bool) -> None:
        """Record the eviction-distance ratio ``r`` of ``peer``'s version (only ``settled`` ones earn trust:
        established neighbours after the founding rounds, outside grace and probation)."""
        if self.trust_versions <= 0 or not settled:
            return
        seen, trusted, forfeited, recent = self._state.get(peer, (0, False, False, ()))
        if not math.isfinite(r) or r >= evict_distance:
            # far: before the trust is earned, it never will be; after, a jump within the last
            # ``trust_versions`` versions forfeits it (a gradual drift does not)
            if not trusted or not (recent and r < self.jump * min(recent)):
                forfeited = True
        elif not forfeited and not trusted:
            seen += 1
            trusted = seen >= self.trust_versions
        kept = r if math.isfinite(r) else math.inf
        self._state[peer] = (seen, trusted, forfeited, (*recent, kept)[-self.trust_versions :])

    def gradual(self, peer: str, r: float) -> bool:
        """Whether ``r`` is one step of a drift, not a new offence: ``peer``'s last ``trust_versions``
        settled versions are recorded and finite, and ``r`` is below ``jump`` times the *last* of them.

        Why the last and not the nearest of them (as :meth:`observe`'s jump): the question here is whether
        the arrival at absurd distances was a leap, and the versions before it were judged one by one
        already (far, they counted when bad). A peer dragged by a Byzantine majority of its own neighbours
        accelerates: 17, 30, 45, then 77 at its one honest neighbour, 1.5-1.7x per version but 4.5x the
        nearest of the three (issue 16, the same-round order on a 4-regular graph, 25 % dissensus), and
        was banned for it. The onset of an attack from near sits inside the trust's window, which
        :meth:`observe` keeps."""
        state = self._state.get(peer)
        if self.trust_versions <= 0 or state is None or len(state[3]) < self.trust_versions:
            return False
        recent = state[3]
        return all(math.isfinite(x) for x in recent) and r < self.jump * recent[-1]

    def counts(self, peer: str, r: float) -> bool:
        """Whether distance ``r`` is far enough for a bad score of ``peer`` to count, beyond
        ``evict_distance`` (the caller's check): a trusted neighbour's only at a finite ``trusted_distance``
        (``inf``: never; its trust ends with a jump, which :meth:`observe` sees first)."""
        if not self.trusted(peer):
            return True
        return math.isfinite(self.trusted_distance) and r >= self.trusted_distance

    def reset(self, peer: str) -> None:
        self._state.pop(peer, None)
