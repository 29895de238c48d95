"""The peer's exchange with the network: it feeds the engine what arrives (gossip, fetched payloads and
snapshots, requests to serve) and carries out the engine's actions (publish, fetch, evict, readmit).

Whatever a remote peer sends ends here as a counted rejection, never as an exception: an unexpected error
while handling one input is counted as ``internal_error`` against the peer, logged (rate-limited), and only
that message, stream or fetch is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from p2pfl.errors import P2PFLError, ResponseTooLargeError, TransportError
from p2pfl.logs import event
from p2pfl.peer_store import now_ms
from p2pfl.protocol import (
    DELTA_PROTOCOL,
    INTERNAL_ERROR,
    SNAPSHOT_PROTOCOL,
    Action,
    Evict,
    FetchPayload,
    Forget,
    GossipEngine,
    Publish,
    PublishProof,
    Readmit,
    RequestSnapshot,
    Wait,
)
from p2pfl.protocol.join import Finish, JoinPlan
from p2pfl.protocol.logs import RateLimiter
from p2pfl.transport.base import Transport
from p2pfl.wire import DIGEST_SIZE

log = logging.getLogger("p2pfl.peer")

#: An unexpected exception from one peer's input is logged once per (peer, exception type) per this interval.
_FAULT_LOG_INTERVAL_S = 10.0
#: The rejections counted against one peer are logged at most once per this interval.
_REJECTION_LOG_INTERVAL_S = 10.0
#: Gossipsub behaviour penalty for a fetched response that provably breaks the protocol (bad framing, bytes
#: that fail their own signed claims): what one invalid gossip message costs its forwarder (P4 weight 10).
INVALID_RESPONSE_PENALTY = 10.0
#: Rejections of a fetched response that do not prove the responder wrong (a race, our own policy or bug).
_NOT_PROVABLE = frozenset(
    {"timeout", "unavailable", "stale_snapshot", "evicted", "replay", "norm_bound", INTERNAL_ERROR}
)


class Exchange:
    """Between one peer's engine and its transport. Runs on the peer's trio loop."""

    def __init__(
        self,
        engine: GossipEngine,
        transport: Callable[[], Transport],
        nursery: Callable[[], trio.Nursery],
        on_update: Callable[[], None],
        *,
        max_model_bytes: int,
        request_timeout_s: float,
    ) -> None:
        self.engine = engine
        self._transport = transport
        self._nursery = nursery
        #: called when a replica may have changed (the round pacing waits for it)
        self._on_update = on_update
        self.max_model_bytes = max_model_bytes
        self.request_timeout_s = request_timeout_s
        #: a remote peer can trigger these lines at will: one per peer (and error type) per interval
        self._rejection_log = RateLimiter(_REJECTION_LOG_INTERVAL_S)
        self._fault_log = RateLimiter(_FAULT_LOG_INTERVAL_S)
        #: told of every action before it is carried out (metrics); an observer must not raise
        self.observers: list[Callable[[Action], None]] = []

    @property
    def transport(self) -> Transport:
        return self._transport()

    def validate_gossip(self, via: str, data: bytes) -> bool:
        """The transport's gossip validator: the engine's check, which must never raise (see _unexpected)."""
        try:
            return self.engine.accept_gossip(data, via, trio.current_time(), wall_ms=now_ms())
        except Exception as exc:
            self.unexpected(via, "gossip validation", exc)
            return False
        finally:
            self.log_faults()

    def validate_from(self, origin: str, via: str, data: bytes) -> bool:
        """:meth:`validate_gossip` for a transport that knows each message's publisher (``origin``)."""
        try:
            return self.engine.accept_gossip(data, via, trio.current_time(), origin=origin, wall_ms=now_ms())
        except Exception as exc:
            self.unexpected(via, "gossip validation", exc)
            return False
        finally:
            self.log_faults()

    def admit_sender(self, sender: str) -> bool:
        """The transport's early gate (before the library's own per-message work): see
        :meth:`p2pfl.protocol.GossipEngine.admit_sender`. Never raises."""
        try:
            return self.engine.admit_sender(sender, trio.current_time())
        except Exception as exc:
            self.unexpected(None, "gossip admission", exc)
            return True

    async def on_gossip(self, via: str, data: bytes) -> None:
        try:
            applied = self.engine.applied
            actions = self.engine.handle_announce(data, via, trio.current_time(), wall_ms=now_ms())
            if self.engine.applied != applied:
                self._on_update()
            await self.execute(actions)
        except Exception as exc:
            self.unexpected(via, "gossip delivery", exc)
        finally:
            self.log_faults()
            self.log_rejections()

    async def serve_delta(self, peer: str, request: bytes) -> bytes:
        if len(request) != DIGEST_SIZE:
            raise TransportError(
                f"a delta request is a {DIGEST_SIZE}-byte payload digest, got {len(request)}"
            )
        payload = self.engine.serve_payload(request)
        if payload is None:
            raise TransportError("unknown payload digest (evicted from the cache or never seen)")
        return payload

    async def serve_snapshot(self, peer: str, request: bytes) -> bytes:
        if request:
            raise TransportError(f"a snapshot request is empty, got {len(request)} bytes")
        return self.engine.serve_snapshot(now_ms())

    def unexpected(self, peer: str | None, where: str, exc: Exception) -> None:
        """An exception escaped the handling of ``peer``'s input (every expected refusal is a counted reason,
        so this is a bug of ours or a decoder that is not total): count ``internal_error`` against the peer,
        log one line, and go on. Only that message, stream or fetch is lost."""
        self.engine.reject(INTERNAL_ERROR, peer)
        self.log_fault(peer, where, exc)

    def log_faults(self) -> None:
        for fault in self.engine.take_faults():
            self.log_fault(fault.peer, fault.where, fault.error)

    def log_fault(self, peer: str | None, where: str, exc: BaseException) -> None:
        if not self._fault_log.allow((peer, type(exc).__name__), trio.current_time()):
            return
        level = logging.WARNING if isinstance(exc, P2PFLError) else logging.ERROR
        log.log(
            level,
            "unexpected error in %s peer=%s error=%s: %s (input refused, counted as %s)",
            where,
            peer or "-",
            type(exc).__name__,
            exc,
            INTERNAL_ERROR,
        )
        log.debug("traceback of the unexpected error in %s", where, exc_info=exc)

    async def execute(self, actions: Sequence[Action]) -> None:
        for action in actions:
            for observe in self.observers:
                observe(action)
            if isinstance(action, Publish):
                try:
                    await self.transport.broadcast(action.envelope)
                except TransportError as exc:
                    log.warning("publish failed seq=%d reason=%s", action.seq, exc)
            elif isinstance(action, PublishProof):
                log.warning("relaying the equivocation proof against peer=%s", action.sender)
                try:
                    await self.transport.broadcast(action.proof)
                except TransportError as exc:
                    log.warning("proof relay failed peer=%s reason=%s", action.sender, exc)
            elif isinstance(action, FetchPayload | RequestSnapshot):
                self._nursery().start_soon(self.fetch, action)
            elif isinstance(action, Evict):
                log.warning(
                    "evicting peer=%s reason=%s",
                    action.peer,
                    action.reason,
                    extra=event("eviction", peer=action.peer, reason=action.reason),
                )
                t: Any = self.transport
                if hasattr(t, "penalise"):
                    t.penalise(action.peer)
                if hasattr(t, "block"):
                    await t.block(action.peer)
            elif isinstance(action, Readmit):
                log.warning(
                    "readmitting peer=%s on probation: its eviction (number %d) expired",
                    action.peer,
                    action.evictions,
                    extra=event("readmission", peer=action.peer, evictions=action.evictions),
                )
                t = self.transport
                if hasattr(t, "unblock"):
                    t.unblock(action.peer)
            elif isinstance(action, Forget):
                log.debug("forgetting peer=%s: past the bound of remembered identities", action.peer)
                t = self.transport
                if hasattr(t, "forget"):
                    t.forget(action.peer)

    async def fetch(self, action: FetchPayload | RequestSnapshot) -> None:
        """Carry out one fetch; whatever the remote sends, this ends as a count, never as an exception (it
        runs in the peer's nursery, where an exception would stop the peer)."""
        try:
            await self._fetch_from(action)
        except Exception as exc:
            if isinstance(action, FetchPayload):  # counted once, and a later announcement may retry
                self.engine.fetch_failed(action.header, INTERNAL_ERROR, action.peer)
                self.log_fault(action.peer, "fetch", exc)
            else:
                self.unexpected(action.peer, "fetch", exc)
        finally:
            self.log_faults()
            self.log_rejections()

    async def _fetch_from(self, action: FetchPayload | RequestSnapshot) -> None:
        peers = [action.peer] if action.via == action.peer else [action.peer, action.via]
        protocol = DELTA_PROTOCOL if isinstance(action, FetchPayload) else SNAPSHOT_PROTOCOL
        body = action.header.payload_digest if isinstance(action, FetchPayload) else b""
        # a payload's exact size is signed (and checked against the model); a snapshot is bounded by config
        limit = action.header.payload_size if isinstance(action, FetchPayload) else self.max_model_bytes
        connected = set(self.transport.connected_peers())
        tried = False
        for peer in peers:
            if peer not in connected:
                continue
            if isinstance(action, RequestSnapshot) and peer != action.peer:
                continue  # a snapshot is signed by its owner: only the owner can serve it
            tried = True
            try:
                data = await self.transport.request(
                    peer, protocol, body, max_response=limit, timeout=self.request_timeout_s
                )
            except TransportError as exc:
                self._request_failed(action, peer, exc)
                continue  # the next peer, if any, is tried
            await self._handle_response(action, peer, data)
            return
        if not tried:  # nobody to ask: neither the sender nor the relay is connected
            if isinstance(action, FetchPayload):
                self.engine.fetch_failed(action.header, "unavailable")
            else:
                self.engine.snapshot_failed(action.peer, "unavailable")

    async def fetch_snapshots(self, plan: JoinPlan, neighbours: Callable[[], list[str]]) -> dict[str, bytes]:
        """The join's snapshots, fetched as ``plan`` says (asked, asked again, bounded by its deadline)."""
        snaps: dict[str, bytes] = {}
        usable: set[str] = set()
        opened = 0  # snapshots ``usable`` was computed from: a Wait step adds none, so none is opened again
        with trio.move_on_at(plan.deadline):
            while True:
                if len(snaps) != opened:  # only usable snapshots make the quorum (protocol.join)
                    usable, opened = self.engine.usable_snapshots(snaps), len(snaps)
                step = plan.next(trio.current_time(), neighbours(), snaps, usable=usable)
                if isinstance(step, Finish):
                    break
                if isinstance(step, Wait):
                    await trio.sleep_until(step.until)
                    continue
                async with trio.open_nursery() as n:
                    for peer in step.peers:
                        n.start_soon(self._fetch_snapshot, peer, step.timeout, snaps)
        return snaps

    async def _fetch_snapshot(self, peer: str, timeout: float, snaps: dict[str, bytes]) -> None:
        try:
            snaps[peer] = await self.transport.request(
                peer, SNAPSHOT_PROTOCOL, b"", max_response=self.max_model_bytes, timeout=timeout
            )
        except TransportError as exc:
            log.debug("join: no snapshot from %s: %s", peer, exc)
            self.engine.snapshot_failed(peer, exc.reason)
        except Exception as exc:
            self.unexpected(peer, "join snapshot fetch", exc)

    def _request_failed(self, action: FetchPayload | RequestSnapshot, peer: str, exc: TransportError) -> None:
        """Counted against the peer that failed, by what failed (oversize, timeout, bad_response,
        unavailable)."""
        (log.info if isinstance(exc, ResponseTooLargeError) else log.debug)(
            "fetch from %s failed: %s", peer, exc
        )
        if isinstance(action, FetchPayload):
            self.engine.fetch_failed(action.header, exc.reason, peer)
        else:
            self.engine.snapshot_failed(peer, exc.reason)
        # a framing violation, or more bytes than the signed size, is provably the responder's
        if exc.reason == "bad_response" or (exc.reason == "oversize" and isinstance(action, FetchPayload)):
            self._penalise(peer)

    async def _handle_response(self, action: FetchPayload | RequestSnapshot, peer: str, data: bytes) -> None:
        """Hand ``peer``'s response to the engine; a rejection that proves the responder wrong costs it."""
        now = trio.current_time()
        before = dict(self.engine.rejections_by_peer.get(peer, {}))
        try:
            if isinstance(action, FetchPayload):
                follow = self.engine.handle_payload(action.header, data, now, peer)
            else:
                follow = self.engine.handle_snapshot(data, action.peer, now)
        except Exception as exc:  # the engine refuses bad bytes by reason; this is a bug of ours
            where = f"{DELTA_PROTOCOL if isinstance(action, FetchPayload) else SNAPSHOT_PROTOCOL} response"
            if isinstance(action, FetchPayload):
                self.engine.fetch_failed(action.header, INTERNAL_ERROR, peer)
                self.log_fault(peer, where, exc)
            else:
                self.unexpected(peer, where, exc)
            return
        after: Mapping[str, int] = self.engine.rejections_by_peer.get(peer, {})
        if any(n > before.get(r, 0) for r, n in after.items() if r not in _NOT_PROVABLE):
            self._penalise(peer)
        self._on_update()
        await self.execute(follow)

    def _penalise(self, peer: str) -> None:
        """Lower ``peer``'s gossipsub score for an invalid response, as gossipsub does for invalid gossip: a
        neighbour that keeps serving bad bytes falls below the gossip, publish and graylist thresholds."""
        penalise = getattr(self.transport, "penalise", None)
        if penalise is not None:
            penalise(peer, INVALID_RESPONSE_PENALTY)

    def log_rejections(self) -> None:
        now = trio.current_time()
        for peer, counts in self.engine.rejections_by_peer.items():
            if counts and self._rejection_log.allow(peer, now):
                log.info(
                    "rejected messages peer=%s counts=%s",
                    peer,
                    dict(counts),
                    extra=event("rejection", peer=peer, counts=dict(counts)),
                )
