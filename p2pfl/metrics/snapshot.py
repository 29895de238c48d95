"""What a scrape reads of a peer: one consistent copy of its counters, taken on the peer's trio loop.

The peer's engine, scorer and transport are mutated by the trio loop only; reading them from the HTTP
server's thread could see a dict change size mid-iteration (an exception in the reader, or worse, in the
peer). So a scrape asks the loop for a :class:`Snapshot` (``trio.from_thread.run_sync``): plain copies,
taken between two steps of the peer, cheap (no model is touched; O(neighbours)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2pfl.peer import Peer


@dataclass(frozen=True)
class Snapshot:
    """The peer's counters at one instant (everything a scrape reports that is not a direct observation)."""

    peer_id: str
    network_id: str
    round: int
    seq: int
    #: application bytes by ``TransportStats`` key (``gossip`` or a protocol id)
    sent_by: dict[str, int] = field(default_factory=dict)
    received_by: dict[str, int] = field(default_factory=dict)
    #: every byte on the connections (libp2p; 0 in memory)
    wire_sent: int = 0
    wire_received: int = 0
    #: deltas applied to a replica (each a verified, accepted envelope)
    accepted: int = 0
    #: envelopes of a version already held (harmless, not rejected)
    duplicates: int = 0
    #: rejections by reason slug (the engine's ``rejections``)
    rejections: dict[str, int] = field(default_factory=dict)
    #: rejections per peer they were counted against (all reasons)
    rejections_by_peer: dict[str, int] = field(default_factory=dict)
    #: what the transport refused or dropped before the engine saw it, by reason (``TransportStats.dropped``:
    #: inbound connections past a source's limits, filtered peers, invalid gossip, ...)
    transport_dropped: dict[str, int] = field(default_factory=dict)
    #: connected learning neighbours and their scoring status (``active``, ``probation``, ...)
    neighbours: dict[str, str] = field(default_factory=dict)
    #: reputation of each neighbour the peer holds a model of or is connected to
    reputation: dict[str, float] = field(default_factory=dict)
    #: the peers held evicted now
    evicted: int = 0
    #: solo rounds (no neighbour's model mixed) in a row, and whether the peer paused (p2pfl.protocol.solo)
    solo_rounds: int = 0
    solo_paused: bool = False
    #: the neighbours whose model the peer holds (a replica)
    replicas: frozenset[str] = frozenset()
    val_accuracy: float | None = None
    val_loss: float | None = None
    #: ``Peer.quality_snapshot()``: the newest version's quality and deltas, serving/candidate seqs
    quality: dict[str, float] = field(default_factory=dict)
    #: ``peer.rollout.status()``: enabled, phase, feedback kept, promotions/demotions/rollbacks since start
    rollout: dict[str, Any] = field(default_factory=dict)


def take_snapshot(peer: Peer) -> Snapshot:
    """Copy ``peer``'s counters. Call it on the peer's trio loop (see the module docstring)."""
    engine = peer.engine
    transport = peer._transport
    stats = transport.stats if transport is not None else None
    scorer = engine.scorer
    neighbours = peer.neighbours() if transport is not None else []
    replicas = frozenset(engine.replicas)
    status: dict[str, str] = {p: (scorer.status(p) if scorer is not None else "active") for p in neighbours}
    known = set(neighbours) | replicas
    reputation = {p: float(scorer.reputation(p)) for p in known} if scorer is not None else {}
    ev = peer.last_eval
    return Snapshot(
        peer_id=peer.peer_id,
        network_id=peer.config.network_id,
        round=peer.round,
        seq=engine.seq,
        sent_by=dict(stats.sent_by) if stats else {},
        received_by=dict(stats.received_by) if stats else {},
        wire_sent=stats.wire_sent if stats else 0,
        wire_received=stats.wire_received if stats else 0,
        accepted=engine.applied,
        duplicates=engine.duplicates,
        rejections=dict(engine.rejections),
        rejections_by_peer={p: sum(c.values()) for p, c in engine.rejections_by_peer.items()},
        transport_dropped=dict(stats.dropped) if stats else {},
        neighbours=status,
        reputation=reputation,
        evicted=len(scorer.evicted()) if scorer is not None else 0,
        solo_rounds=peer.rounds.solo.tracker.rounds,
        solo_paused=peer.rounds.solo.tracker.paused,
        replicas=replicas,
        val_accuracy=ev.accuracy if ev is not None else None,
        val_loss=ev.loss if ev is not None else None,
        quality=dict(peer.quality_snapshot()),  # lock-free reads: never waits for an evaluation
        rollout=peer.rollout.status(),
    )
