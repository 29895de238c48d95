"""Replicas of other peers' public models, and what a round made of them."""

from __future__ import annotations

from collections.abc import Sequence
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
    updated_at: float
    meta: Meta = field(default_factory=Meta)

    @property
    def version(self) -> tuple[int, bytes]:
        return self.seq, self.digest


def genesis_replica(
    peer: str, base: bytes, genesis: tuple[bytes, FloatVec] | None, now: float
) -> Replica | None:
    """A replica of ``peer`` at version 0, if its first delta (seq 1) is based on the model we started from
    too (``genesis``: its digest and vector): that delta then applies without first fetching a snapshot of a
    model we already hold. Peers that start from the same initial model (a simulation, a network started
    from one checkpoint) otherwise fetch one snapshot per neighbour before their first mix (measured: 240
    of them at 16 peers, 17% of the payload bytes; on a loaded machine most timed out and round 1 mixed
    without those neighbours). The result digest of the delta is still checked when it is applied."""
    if genesis is None or base != genesis[0]:
        return None
    return Replica(peer, genesis[1].copy(), 0, base, now)


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
        self._losses: dict[str, tuple[tuple[int, bytes], float]] = {}

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

    def record(self, jobs: Sequence[EvalJob], losses: Sequence[float]) -> None:
        """File each job's loss under the version that was evaluated (``losses[i]`` is ``jobs[i]``'s)."""
        for job, loss in zip(jobs, losses, strict=True):
            self._losses[job.peer] = (job.version, loss)

    def version_of(self, peer: str) -> tuple[int, bytes] | None:
        entry = self._losses.get(peer)
        return None if entry is None else entry[0]

    def losses(self, candidates: Sequence[Replica]) -> dict[str, float]:
        """The loss of each candidate's version, where known (a version never evaluated has none)."""
        out = {}
        for r in candidates:
            entry = self._losses.get(r.peer)
            if entry is not None and entry[0] == r.version:
                out[r.peer] = entry[1]
        return out
