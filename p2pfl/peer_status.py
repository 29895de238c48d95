"""What a peer reports about itself: its status (``status.json``, the status line, ``PeerHandle.status``) and
the one line it logs when it stops. Read-only views of a :class:`~p2pfl.peer.Peer`, kept out of the peer's
lifecycle code; call them on the peer's trio loop (they read state the loop mutates).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from p2pfl.errors import P2PFLError
from p2pfl.logs import event
from p2pfl.secagg.channel import group_status

if TYPE_CHECKING:
    from p2pfl.peer import Peer

log = logging.getLogger("p2pfl.peer")


def peer_status(peer: Peer) -> dict[str, Any]:
    """The peer's status: round and version, validation figures, traffic, rejections, evictions, access,
    quality deltas and rollout (``docs/peer.md``, ``docs/rollout.md``)."""
    transport = peer._transport
    stats = transport.stats if transport is not None else None
    ev = peer.last_eval
    engine = peer.engine
    return {
        "peer_id": peer.peer_id,
        "network_id": peer.config.network_id,
        "round": peer.round,
        "seq": engine.seq,
        "val_loss": ev.loss if ev else None,
        "val_accuracy": ev.accuracy if ev else None,
        "neighbours": len(peer.neighbours()) if transport else 0,
        "replicas": len(engine.replicas),
        "bytes_sent": stats.bytes_sent if stats else 0,
        "bytes_received": stats.bytes_received if stats else 0,
        "rejected": dict(engine.rejections),
        "duplicates": engine.duplicates,
        "mixes_refused": peer.mixes_refused,
        "evicted": sorted(engine.evicted_peers()),  # scored out or convicted (equivocation)
        "access": peer.access.status() if peer.access is not None else None,
        "quality": dict(peer.rollout.quality_snapshot()),
        "rollout": peer.rollout.status(),
        "privacy": peer.privacy.status(engine.seq) if peer.privacy is not None else None,
        "solo": peer.rounds.solo.status(),  # p2pfl.protocol.solo
        "rotation": peer.rotation.status() if peer.rotation is not None else None,
        "secagg": group_status(peer.secagg, peer.secagg_channel) if peer.secagg is not None else None,
    }


def log_stop(peer: Peer, error: BaseException | None) -> None:
    """One last line: INFO for a clean stop; ERROR for an expected failure (a :class:`P2PFLError` such as a
    full disk); a crash (a bug, or an error the host app raised inside the ``async with``) is CRITICAL with
    its type, so neither reads like a clean stop."""
    seq, persisted = peer.engine.seq, peer.persisted_seq
    where = f"peer={peer.peer_id} round={peer.round} seq={seq} persisted_seq={persisted}"
    fields: dict[str, Any] = {"round": peer.round, "seq": seq, "persisted_seq": persisted}
    own = peer.peer_id
    if error is None or only_cancelled(error):
        log.info(
            "peer stopped %s",
            where,
            extra=event("stop", peer_id=own, outcome="stopped", error=None, **fields),
        )
        return
    leaf = leaf_error(error)
    what = f"{type(leaf).__name__}: {leaf}"
    if isinstance(leaf, P2PFLError):  # expected (disk full, bad state): no bug, but no clean stop
        log.error(
            "peer failed %s error=%s: %s", where, type(leaf).__name__, leaf,
            extra=event("stop", peer_id=own, outcome="failed", error=what, **fields),
        )  # fmt: skip
        return
    log.critical(
        "peer crashed %s error=%s: %s", where, type(leaf).__name__, leaf,
        extra=event("stop", peer_id=own, outcome="crashed", error=what, **fields),
    )  # fmt: skip


def leaf_error(error: BaseException) -> BaseException:
    """The first non-group exception inside ``error`` (nurseries wrap a task's crash in groups)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def only_cancelled(error: BaseException) -> bool:
    """True if ``error`` is (a group of) cancellations or an interrupt: a stop, not a crash."""
    if isinstance(error, BaseExceptionGroup):
        return all(only_cancelled(e) for e in error.exceptions)
    return isinstance(error, trio.Cancelled | KeyboardInterrupt | SystemExit | GeneratorExit)
