"""Evictions with an expiry: who is banned, how often it was, and when each ban ends.

Two kinds: the scorer's evictions (bad models; the scorer keeps the status, readmission puts the peer on
probation) and *convictions* (proven misbehaviour, e.g. ``equivocation``: a signed proof, no score involved),
which last at least a day and are kept here, whatever the scorer says.

The transport blocks every evicted peer until a :class:`~p2pfl.protocol.actions.Readmit` (or a
:class:`~p2pfl.protocol.actions.Forget`, when :mod:`p2pfl.protocol.churn` forgets a banned identity past its
bound) tells it to stop, so its block list holds no identity this book does not (or has just dropped).
The peer's checkpoint keeps the book (:meth:`BanBook.snapshot`, :meth:`BanBook.restore`): a restart does not
readmit the peers it banned.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from p2pfl.protocol.actions import Forget, Readmit
from p2pfl.protocol.config import _MAX_BAN_S
from p2pfl.scoring import ContributionScorer

#: forgotten banned peers kept until :meth:`BanBook.readmissions` hands them to the transport (every round
#: and serving pass drains them; the bound only matters to a caller that never does)
_MAX_RELEASED = 4096


class BanEntry(NamedTuple):
    """One peer's ban record as a checkpoint keeps it: ``remaining_s`` of its current ban (0: expired, the
    count kept for the next one) and the conviction's reason, if convicted."""

    peer: str
    evictions: int
    remaining_s: float
    reason: str | None = None


class BanBook:
    """Per evicted peer: (evictions so far, when the current one expires). The count survives readmission,
    so a repeat offender waits twice as long each time. Pure: the caller passes ``now``."""

    def __init__(self, readmit_after_s: float) -> None:
        self.readmit_after_s = readmit_after_s
        self._bans: dict[str, tuple[int, float]] = {}
        #: convicted peer -> (reason, when the conviction expires)
        self._convicted: dict[str, tuple[str, float]] = {}
        #: peers forgotten with a ban record, for the transport to forget too (see :meth:`readmissions`)
        self._released: deque[str] = deque(maxlen=_MAX_RELEASED)

    def ban(self, peer: str, now: float) -> None:
        """Start an eviction's clock: ``readmit_after_s``, doubled per earlier eviction, capped at a day."""
        base = self.readmit_after_s
        count = self.evictions_of(peer) + 1
        length = min(base * 2.0 ** min(count - 1, 32), max(base, _MAX_BAN_S))
        self._bans[peer] = (count, now + length)

    def snapshot(self, now: float) -> tuple[BanEntry, ...]:
        """Every ban record at ``now``, for the checkpoint: a restarted peer that forgot them readmitted at
        once every poisoner it had evicted, which then had to be caught again."""
        out = []
        for peer, (count, until) in sorted(self._bans.items()):
            reason = self._convicted.get(peer, (None, 0.0))[0]
            out.append(BanEntry(peer, count, max(0.0, until - now), reason))
        return tuple(out)

    def restore(self, entries: tuple[BanEntry, ...], now: float) -> list[str]:
        """Take the records of :meth:`snapshot` back at ``now`` (a restart); returns the peers whose ban is
        still running (for the scorer and the transport's block list)."""
        banned: list[str] = []
        for e in entries:
            until = now + e.remaining_s
            self._bans[e.peer] = (e.evictions, until)
            if e.reason is not None and e.remaining_s > 0:
                self._convicted[e.peer] = (e.reason, until)
            if e.remaining_s > 0:
                banned.append(e.peer)
        return banned

    def evictions_of(self, peer: str) -> int:
        """How many times ``peer`` was evicted (each readmission that ends badly adds one)."""
        return self._bans.get(peer, (0, 0.0))[0]

    def convict(self, peer: str, now: float, reason: str) -> bool:
        """Ban ``peer`` for proven misbehaviour (a day, or ``readmit_after_s`` if longer, doubled per earlier
        ban). False if it is convicted already (nothing changes)."""
        if peer in self._convicted:
            return False
        self.ban(peer, now)
        count, until = self._bans[peer]
        self._bans[peer] = (count, max(until, now + max(self.readmit_after_s, _MAX_BAN_S)))
        self._convicted[peer] = (reason, self._bans[peer][1])
        return True

    def convicted(self, peer: str) -> str | None:
        """The reason ``peer`` is convicted for, or None."""
        entry = self._convicted.get(peer)
        return None if entry is None else entry[0]

    def peers(self) -> set[str]:
        """Every peer with a ban count or a conviction (p2pfl.protocol.churn bounds them)."""
        return set(self._bans) | set(self._convicted)

    def forget(self, peer: str) -> None:
        """Drop ``peer``'s ban count and conviction (p2pfl.protocol.churn: past the remembered bound); a peer
        that had a ban record is handed to the transport by the next :meth:`readmissions`, to unblock."""
        if self._bans.pop(peer, None) is not None:
            self._released.append(peer)
        self._convicted.pop(peer, None)

    def convicted_peers(self) -> set[str]:
        return set(self._convicted)

    def expire_convictions(self, now: float) -> list[Readmit]:
        out: list[Readmit] = []
        for peer, (_reason, until) in sorted(self._convicted.items()):
            if until <= now:
                del self._convicted[peer]
                out.append(Readmit(peer, self.evictions_of(peer)))
        return out

    def readmissions(self, now: float, scorer: ContributionScorer | None) -> list[Readmit | Forget]:
        """Readmit (in ``scorer``) every evicted peer whose ban expired at ``now``, end expired convictions,
        and :class:`Forget` the banned peers forgotten since the last call (the transport unblocks them)."""
        out: list[Readmit | Forget] = [Forget(p) for p in self._released]
        self._released.clear()
        out += self.expire_convictions(now)
        if scorer is None:
            return out
        for peer, (count, until) in sorted(self._bans.items()):
            if until <= now and scorer.status(peer) == "evicted" and peer not in self._convicted:
                scorer.readmit(peer)
                out.append(Readmit(peer, count))
        return out
