"""Replicas of other peers' public models, and what a round made of them."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from p2pfl.protocol.actions import Action
from p2pfl.protocol.layout import FloatVec
from p2pfl.scoring import ScoreRecord
from p2pfl.wire import Meta


@dataclass
class Replica:
    """Our copy of another peer's public model at version ``seq``."""

    peer: str
    vec: FloatVec
    seq: int
    digest: bytes
    #: when this version was applied (a new version: what the pacing counts as news)
    updated_at: float
    meta: Meta = field(default_factory=Meta)
    #: when its signer last vouched for this version as its current one: a snapshot we asked it for, of
    #: the version we hold (p2pfl.protocol.snapshots, "renewals"); no version news, but the peer is alive
    confirmed_at: float = -math.inf

    @property
    def version(self) -> tuple[int, bytes]:
        return self.seq, self.digest

    @property
    def heard_at(self) -> float:
        """When the signer last stood by this version: applied, or confirmed since. Staleness (the mix)
        and forgetting (p2pfl.protocol.idle) count from here: a finished neighbour that still serves its
        final model is not gone."""
        return max(self.updated_at, self.confirmed_at)


@dataclass(frozen=True)
class Contribution:
    """One input of a mixing step, for the version log."""

    peer: str
    seq: int
    weight: float
    score: float | None
    reputation: float
    status: str


@dataclass(frozen=True)
class RoundOutcome:
    """What a local round produced: actions to carry out and facts for the version log."""

    actions: list[Action]
    seq: int
    digest: bytes
    contributions: list[Contribution]
    scores: dict[str, ScoreRecord]
    evicted: list[str]
    #: the own model's weight in the mix (the aggregation's ``own_weight`` plus what the share caps moved
    #: to it): with the contributions' weights, every row's share of the mix
    own_weight: float = 1.0


@dataclass(frozen=True)
class EvalJob:
    """One replica version to evaluate on the own validation split, captured on the event loop: ``vec`` is a
    read-only copy, so gossip that moves the replica on while a worker thread evaluates cannot change what
    is evaluated, nor the version its loss is filed under."""

    peer: str
    version: tuple[int, bytes]
    vec: FloatVec


class ValLossCache:
    """Each candidate replica's loss on the own validation split, by its version.

    A replica's loss on our (fixed) validation split changes only with its version: an unchanged one is not
    evaluated again (a neighbour slower than us would otherwise cost one evaluation per own round). Pure:
    ``plan`` and ``record`` run on the event loop; only the jobs' evaluation runs in a worker thread.
    """

    def __init__(self) -> None:
        #: peer -> (the version evaluated, its loss, whether it answers one class the own split lacks: a
        #: specialist, p2pfl.scoring.specialist)
        self._losses: dict[str, tuple[tuple[int, bytes], float, bool]] = {}

    def plan(self, candidates: Sequence[Replica]) -> list[EvalJob]:
        """The versions among ``candidates`` not evaluated yet; forgets peers that are no candidates."""
        peers = {r.peer for r in candidates}
        self._losses = {p: v for p, v in self._losses.items() if p in peers}
        jobs = []
        for r in candidates:
            if self.version_of(r.peer) != r.version:
                vec = r.vec.copy()
                vec.setflags(write=False)
                jobs.append(EvalJob(r.peer, r.version, vec))
        return jobs

    def record(
        self, jobs: Sequence[EvalJob], losses: Sequence[float], specialists: Sequence[bool] | None = None
    ) -> None:
        """File each job's loss under the version that was evaluated (``losses[i]`` is ``jobs[i]``'s), and
        whether that version is a specialist's (``specialists[i]``; none without it)."""
        flags = [False] * len(jobs) if specialists is None else specialists
        for job, loss, specialist in zip(jobs, losses, flags, strict=True):
            self._losses[job.peer] = (job.version, loss, specialist)

    def _current(self, candidates: Sequence[Replica]) -> Iterator[tuple[str, float, bool]]:
        """(peer, loss, specialist) of each candidate whose current version was evaluated."""
        for r in candidates:
            entry = self._losses.get(r.peer)
            if entry is not None and entry[0] == r.version:
                yield r.peer, entry[1], entry[2]

    def specialists(self, candidates: Sequence[Replica]) -> frozenset[str]:
        """The candidates whose current version was found a specialist's."""
        return frozenset(peer for peer, _, specialist in self._current(candidates) if specialist)

    def version_of(self, peer: str) -> tuple[int, bytes] | None:
        entry = self._losses.get(peer)
        return None if entry is None else entry[0]

    def losses(self, candidates: Sequence[Replica]) -> dict[str, float]:
        """The loss of each candidate's version, where known (a version never evaluated has none)."""
        return {peer: loss for peer, loss, _ in self._current(candidates)}
