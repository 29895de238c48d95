"""The sans-I/O gossip-learning engine: events in, decisions out.

The engine owns a peer's learning state (own model, public model, replicas of other peers' public models,
scores) and decides, for each event, what to apply, fetch, publish or evict. It never touches a socket, a file
or a clock: the caller passes ``now`` with every event and carries out the returned :class:`Action` values.
That keeps every protocol decision testable exactly and fast, and lets the same engine run over libp2p and
over the in-memory transport.

Versions. A peer's *public model* has a version ``seq``: version 0 is the initial model, and every published
delta (``kind="delta"``, ``seq`` s, ``base`` = digest of version s-1, ``result`` = digest of version s)
moves it one step. A receiver keeps a replica per sender and applies a delta only when it is exactly the
next version of that replica; on a gap or a digest mismatch it asks the sender for a snapshot (a signed full
model). Deltas that arrive while that snapshot is on its way are buffered and applied after it.

The engine is composed by concern: :mod:`p2pfl.protocol.core` (state and bookkeeping),
:mod:`p2pfl.protocol.receive` (validation and application of what arrives; the validation order is there;
its bases :mod:`p2pfl.protocol.snapshots` and :mod:`p2pfl.protocol.proofs`) and :mod:`p2pfl.protocol.rounds`
(publishing, mixing, scoring).
"""

from __future__ import annotations

from typing import Any

from p2pfl.protocol.core import PENDING_PER_PEER as PENDING_PER_PEER  # noqa: PLC0414 (re-export)
from p2pfl.protocol.receive import ReceiveSide
from p2pfl.protocol.rounds import RoundSide


class GossipEngine(ReceiveSide, RoundSide):
    """One peer's protocol state machine. Not thread-safe: drive it from one task."""

    # ----------------------------------------------------------------------------------- reports

    def status(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "seq": self.seq,
            "replicas": len(self.replicas),
            "applied": self.applied,
            "rejected": dict(self.rejections),
            "evicted": sorted(self.evicted_peers()),
            "proofs": {"verified": self.proofs.verified, "relayed": self.proofs.relayed},
        }
