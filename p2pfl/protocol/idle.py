"""Forgetting the replicas of neighbours gone quiet, so churn does not grow a long-lived peer's tables.

A replica is kept per sender; without this it went only on eviction or equivocation, so every identity that
ever published to a long-lived peer stayed in its table. The policy is on the replica's own clock, not the
transport's: a replica neither moved on nor confirmed by its signer (a snapshot we asked for:
``Replica.heard_at``) for ``forget_after_s`` (default ten times ``max_staleness_s``, so it has
been out of every mix for nine staleness windows) is forgotten, whether its peer left, disconnected or went
silent. A peer that comes back is served as a late joiner: its next delta finds no replica and asks for a
snapshot (one fetch). The rest of its per-identity state (the scorer's record, ``_heard_at``, its ban
count) is forgotten or remembered by :mod:`p2pfl.protocol.churn` at the same moment: a record worse than a new
identity's stays (bounded), so an identity cannot launder it by going quiet.

Forgetting must not reopen a replay: an old signed delta of a forgotten peer (its version 1 from the common
initial model needs no replica to apply) would otherwise come back as a fresh replica. :class:`ForgottenBook`
keeps each forgotten peer's last version as a floor below which its deltas and snapshots are refused, for
the ``MAX_FORGOTTEN`` most recently forgotten peers (the oldest floor is dropped first: bounded too).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Protocol

#: forgotten peers whose last version is kept as a replay floor (oldest dropped first)
MAX_FORGOTTEN = 4096
#: the default forgetting horizon, in units of ``max_staleness_s``
FORGET_STALENESS_FACTOR = 10.0


class _Heard(Protocol):
    @property
    def heard_at(self) -> float: ...


def idle_peers(replicas: Mapping[str, _Heard], now: float, forget_after_s: float) -> list[str]:
    """The peers whose replicas were neither moved on nor confirmed by their signer (a snapshot of the same
    version, asked for: :meth:`~p2pfl.protocol.replicas.Replica.heard_at`) for more than ``forget_after_s``
    at ``now`` (sorted)."""
    return sorted(p for p, rep in replicas.items() if now - rep.heard_at > forget_after_s)


class ForgottenBook:
    """Per forgotten peer, the last version we held: deltas and snapshots at or below it are replays."""

    def __init__(self, capacity: int = MAX_FORGOTTEN) -> None:
        self._floors: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity

    def remember(self, peers: Iterable[tuple[str, int]]) -> None:
        """Keep ``(peer, seq)`` floors; the oldest beyond the capacity are dropped."""
        for peer, seq in peers:
            self._floors[peer] = max(seq, self._floors.get(peer, seq))
            self._floors.move_to_end(peer)
        while len(self._floors) > self._capacity:
            self._floors.popitem(last=False)

    def floor(self, peer: str) -> int:
        """The last version of ``peer`` we forgot (-1: none kept)."""
        return self._floors.get(peer, -1)

    def __len__(self) -> int:
        return len(self._floors)
