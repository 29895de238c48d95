"""Evictions with an expiry: who is banned, how often it was, and when each ban ends."""

from __future__ import annotations

from p2pfl.protocol.actions import Readmit
from p2pfl.protocol.config import _MAX_BAN_S
from p2pfl.scoring import ContributionScorer


class BanBook:
    """Per evicted peer: (evictions so far, when the current one expires). The count survives readmission,
    so a repeat offender waits twice as long each time. Pure: the caller passes ``now``."""

    def __init__(self, readmit_after_s: float) -> None:
        self.readmit_after_s = readmit_after_s
        self._bans: dict[str, tuple[int, float]] = {}

    def ban(self, peer: str, now: float) -> None:
        """Start an eviction's clock: ``readmit_after_s``, doubled per earlier eviction, capped at a day."""
        base = self.readmit_after_s
        count = self.evictions_of(peer) + 1
        length = min(base * 2.0 ** min(count - 1, 32), max(base, _MAX_BAN_S))
        self._bans[peer] = (count, now + length)

    def evictions_of(self, peer: str) -> int:
        """How many times ``peer`` was evicted (each readmission that ends badly adds one)."""
        return self._bans.get(peer, (0, 0.0))[0]

    def readmissions(self, now: float, scorer: ContributionScorer) -> list[Readmit]:
        """Readmit (in ``scorer``) every evicted peer whose ban expired at ``now``."""
        out: list[Readmit] = []
        for peer, (count, until) in sorted(self._bans.items()):
            if until <= now and scorer.status(peer) == "evicted":
                scorer.readmit(peer)
                out.append(Readmit(peer, count))
        return out
