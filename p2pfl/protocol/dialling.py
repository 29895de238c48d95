"""Which end of a pair of static peers dials: the lower peer id at once, the higher one after a grace.

Peers started together that list each other as static peers used to dial each other at the same moment:
every pair formed two connections, which the transport then resynced to one (closing both, one end
redialling; ``p2pfl.transport.libp2p.connections``). Each resync costs a round trip of closes and dials,
and under CPU load resyncs chained for seconds (docs/benchmarks.md, "Crossing dials at start-up"). So the
lower peer id of a pair dials first; the higher one dials only once the peer has stayed unconnected for
:data:`DIAL_GRACE_S`.
Reachability never rests on one side: a peer whose lower neighbour is down, behind a NAT or does not list it
still dials, one grace later. Pure: the caller passes the clock's readings.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping

#: How long the higher peer id of a pair leaves the dial to the lower one before it dials itself. Long enough
#: for the lower one's dial to land under CPU load; a peer's re-dials run every housekeeping period, so the
#: higher one dials at its first period past this.
DIAL_GRACE_S = 2.0


def addr_peer_id(addr: str) -> str:
    """The peer id an address names: its last component (``.../p2p/<id>``, a trailing ``/`` ignored)."""
    return addr.rstrip("/").rpartition("/")[2]


def dials_now(own_id: str, peer_id: str, unconnected_since: float, now: float, grace_s: float) -> bool:
    """Whether ``own_id`` dials the unconnected ``peer_id`` now: at once if its id is the lower one, else once
    the peer has been unconnected since ``unconnected_since`` for ``grace_s`` or more."""
    return own_id < peer_id or now - unconnected_since >= grace_s


def static_dials(
    own_id: str,
    static_ids: Iterable[str],
    connected: set[str],
    unconnected_since: MutableMapping[str, float],
    *,
    now: float,
    grace_s: float = DIAL_GRACE_S,
) -> list[str]:
    """The static peers to dial now, in the given order. ``unconnected_since`` (peer -> when it was first
    seen unconnected) is updated: a connected peer is dropped from it, a newly unconnected one enters at
    ``now``. Ourselves and connected peers are never dialled."""
    out = []
    for pid in static_ids:
        if pid == own_id:
            continue
        if pid in connected:
            unconnected_since.pop(pid, None)
            continue
        since = unconnected_since.setdefault(pid, now)
        if dials_now(own_id, pid, since, now, grace_s):
            out.append(pid)
    return out
