"""How a starting peer joins: which neighbours to ask for snapshots, when to ask again, when to stop.
Pure: the caller passes ``now``, the connected neighbours and who answered so far.

A fresh peer (``adopt``) starts from the median of its neighbours' snapshots, never one peer's word; a peer
resuming from a checkpoint keeps its own model in the median. Either way only if at least ``quorum``
snapshots were usable (:meth:`JoinPlan.apply`). Neighbours that did not answer are asked again (a
connection resynced at start-up loses its requests), ``attempts`` times in all, ``retry_s`` apart, and the
whole join ends after ``timeout_s``: it holds up the first round. That includes a neighbour asked before
that is not connected at the moment: a resync closes both ends' connections and redials, and a join that
looked only at the connections of that moment ended with nothing from it (seen in the two-networks CLI test:
the beta peer's only learner was being resynced, and it started solo).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from p2pfl.protocol.actions import Wait


@dataclass(frozen=True)
class AskSnapshots:
    """Request a snapshot from each of ``peers``, each request bounded by ``timeout`` seconds."""

    peers: tuple[str, ...]
    timeout: float


@dataclass(frozen=True)
class Finish:
    """Stop asking: use the snapshots that arrived."""


class JoinPlan:
    """One join's schedule (see the module docstring)."""

    def __init__(
        self,
        *,
        quorum: int,
        timeout_s: float,
        request_timeout_s: float,
        adopt: bool,
        started_at: float,
        attempts: int = 3,
        retry_s: float = 1.0,
    ) -> None:
        self.quorum = quorum
        self.timeout_s = timeout_s
        self.request_timeout = min(timeout_s, request_timeout_s)
        self.adopt = adopt
        self.attempts = attempts
        self.retry_s = retry_s
        #: the join ends here, whatever is in flight
        self.deadline = started_at + timeout_s
        self.attempt = 0
        self._retry: tuple[float, tuple[str, ...]] | None = None
        #: every peer asked so far
        self._asked: set[str] = set()

    def next(
        self, now: float, connected: Sequence[str], answered: Collection[str], *, usable: Collection[str]
    ) -> AskSnapshots | Wait | Finish:
        """The next step. ``answered``: the peers whose snapshot arrived (never asked again: the same
        peer serves the same refusal); ``usable``: those of them the engine would use. Only these count
        towards the quorum: a refused snapshot (wrong_arch, a bad signature, absurd) ended the join before
        a peer whose request was lost was asked again, and the join kept the own model."""
        if now >= self.deadline:
            return Finish()
        if self._retry is not None:  # the peers to ask again were chosen before the pause
            at, peers = self._retry
            if now < at:
                return Wait(min(at, self.deadline))
            self._retry = None
            return self._ask(peers)
        if self.attempt >= self.attempts:
            return Finish()
        missing = tuple(p for p in connected if p not in answered)
        # asked, unanswered and not connected now: its connection is being resynced (module docstring)
        missing += tuple(sorted(p for p in self._asked if p not in answered and p not in missing))
        if not missing or (self.attempt and len(usable) >= self.quorum):
            return Finish()
        if self.attempt:
            self._retry = (now + self.retry_s, missing)
            return Wait(min(now + self.retry_s, self.deadline))
        return self._ask(missing)

    def _ask(self, peers: tuple[str, ...]) -> AskSnapshots:
        self.attempt += 1
        self._asked.update(peers)
        return AskSnapshots(peers, self.request_timeout)

    def apply(self, used: int) -> bool:
        """Whether ``used`` usable snapshots are enough to change the own model."""
        return used >= self.quorum
