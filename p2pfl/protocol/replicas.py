"""Replicas of other peers' public models, and what a round made of them."""

from __future__ import annotations

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
