"""The peer: protocol engine + transport + learner + durable state, on trio.

``Peer`` is the one place where the network, the clock, threads and the disk meet the pure engine. Use it as
an async context manager from trio code::

    async with p2pfl.Peer(config, learner) as peer:
        await peer.run(rounds=20)

or, from any other program (threads, asyncio), through :class:`PeerHandle`, which runs the same ``Peer`` in
its own trio thread and exposes thread-safe ``start``/``stop``/``status``/``params``.

Each round: start from the own (mixed) model, train ``local_steps`` in a worker thread (the trio loop keeps
serving the network meanwhile), optionally evaluate the fresh replicas on the own validation split, let the
engine publish the trained model and mix it with the replicas, check for a rollback, write the checkpoint and
the version log (before broadcasting: a crash can never reuse a version number), then broadcast and evict.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import trio

from p2pfl.config.schema import PeerConfig as PeerConfig  # noqa: PLC0414 - re-exported from its old home
from p2pfl.errors import ConfigError, P2PFLError, ResponseTooLargeError, StateError, TransportError
from p2pfl.fsutil import atomic_write, remove_stale_temps
from p2pfl.identity import Identity
from p2pfl.learner import EvalResult, Learner
from p2pfl.protocol import (
    DELTA_PROTOCOL,
    INTERNAL_ERROR,
    SNAPSHOT_PROTOCOL,
    Action,
    Evict,
    FetchPayload,
    GossipEngine,
    Publish,
    Readmit,
    RequestSnapshot,
    RoundOutcome,
)
from p2pfl.scoring import ScoreRecord
from p2pfl.state import Checkpoint, RollbackGuard, VersionLog, load_checkpoint, save_checkpoint
from p2pfl.transport.base import Transport
from p2pfl.wire import DIGEST_SIZE, Meta

if TYPE_CHECKING:
    # trio's own TaskStatus is shadowed by the trio-typing stubs that libp2p pulls in.
    from trio_typing import TaskStatus

log = logging.getLogger("p2pfl.peer")

#: How long a connected peer may take to subscribe to our announcements before it is taken for a non-learner
#: (a bootstrap registry never subscribes). Gossipsub carries a subscription in its first RPC; the topic sync
#: runs every second.
SUBSCRIBE_GRACE_S = 3.0

#: How long a stopping peer waits for its cancelled tasks before it aborts the transport's connections.
EXIT_GRACE_S = 3.0
#: the join asks peers that did not answer again, this often and this long apart (within join_timeout_s)
_JOIN_ATTEMPTS = 3
_JOIN_RETRY_S = 1.0
#: A stopping peer withdraws its registration from the bootstrap registries for at most this long.
UNREGISTER_TIMEOUT_S = 3.0
#: An unexpected exception from one peer's input is logged once per (peer, exception type) per this interval.
_FAULT_LOG_INTERVAL_S = 10.0
#: Gossipsub behaviour penalty for a fetched response that provably breaks the protocol (bad framing, bytes
#: that fail their own signed claims): what one invalid gossip message costs its forwarder (P4 weight 10).
INVALID_RESPONSE_PENALTY = 10.0
#: Rejections of a fetched response that do not prove the responder wrong (a race, our own policy or bug).
_NOT_PROVABLE = frozenset(
    {"timeout", "unavailable", "stale_snapshot", "evicted", "replay", "norm_bound", INTERNAL_ERROR}
)

Params = dict[str, npt.NDArray[np.float32]]
TransportFactory = Callable[[Identity], Any]  # returns an async context manager yielding a Transport


@dataclass
class RoundReport:
    """What one round did, for status lines, simulations and tests."""

    round: int
    seq: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    neighbours: int
    mixed: int
    evicted: list[str]
    rolled_back: bool
    duration_s: float
    #: the mix failed the own-data guard (``mix_guard_margin``): the round kept the trained model
    mix_refused: bool = False


def _libp2p_factory(config: PeerConfig) -> TransportFactory:
    def factory(identity: Identity) -> Any:
        from p2pfl.transport.libp2p import Libp2pTransport

        return Libp2pTransport.open(seed=identity.seed, network_id=config.network_id, listen=config.listen)

    return factory


class Peer:
    """A p2pfl peer node. Enter it (``async with``) to go online; leave it to shut down cleanly."""

    def __init__(
        self,
        config: PeerConfig,
        learner: Learner,
        identity: Identity | None = None,
        *,
        transport: TransportFactory | None = None,
    ) -> None:
        self.config = config
        self.learner = learner
        self.identity = identity or Identity.generate()
        self._transport_factory = transport or _libp2p_factory(config)
        self.engine = GossipEngine(
            self.identity,
            config.protocol(),
            learner.get_params(),
            aggregation=config.aggregation,
            scoring=config.scoring,
            scoring_enabled=config.scoring_enabled,
            allowed=(config.allow.__contains__ if config.allow is not None else None),
            mix_filter=self._may_mix if config.mix_scope == "connected" else None,
        )
        self.round = 0
        self.reports: list[RoundReport] = []
        self.last_eval: EvalResult | None = None
        self._transport: Transport | None = None
        self._nursery: trio.Nursery | None = None
        self._log: VersionLog | None = None
        self.persisted_seq: int | None = None  # the version the checkpoint holds (None: none yet)
        self._guard = (
            RollbackGuard(margin=config.rollback_margin, warmup=config.rollback_warmup)
            if config.rollback_margin
            else None
        )
        self._round_lock = trio.Lock()
        self._stopped = trio.Event()
        self._started_at = time.monotonic()
        self._last_status = 0.0
        self._rejection_logged: dict[str, float] = {}
        self._replica_updated = trio.Event()
        self._last_mix = -math.inf
        #: connected neighbour -> when we first saw it connected (trio clock); dropped when it disconnects
        self._first_seen: dict[str, float] = {}
        self.local_divergences = 0
        self.mixes_refused = 0
        #: each candidate replica's loss on the own validation split, by its version (see _step)
        self._val_losses: dict[str, tuple[tuple[int, bytes], float]] = {}
        #: how many neighbour models have been evaluated for scoring (one per new version)
        self.val_evaluations = 0
        self._started = False
        self._lock_fd: int | None = None
        self._discovery: Any = None
        self._discovery_scope = trio.CancelScope()
        #: peer ids of the bootstrap registries: connected, but never learning neighbours
        self._registries = frozenset(a.rstrip("/").rpartition("/")[2] for a in config.bootstrap)
        self._fault_logged: dict[tuple[str | None, str], float] = {}

    # --------------------------------------------------------------------------------- lifecycle

    async def _unstick(self, nursery: trio.Nursery) -> None:
        """Give the cancelled tasks ``EXIT_GRACE_S`` to finish, then abort the transport's connections.

        A task may sit in a libp2p cleanup that is shielded from cancellation and waits on a deadlocked
        connection (``Libp2pTransport.abort`` explains it); without this the peer would never exit."""
        with trio.CancelScope(shield=True):  # runs even when the peer is left by cancellation
            with trio.move_on_after(EXIT_GRACE_S):
                while nursery.child_tasks:
                    await trio.sleep(0.05)
            abort = getattr(self._transport, "abort", None)
            if nursery.child_tasks and abort is not None:
                names = sorted({t.name.rpartition(".")[2] for t in nursery.child_tasks})
                log.warning(
                    "%d task(s) still running %.0f s after stop (%s): aborting the connections",
                    len(nursery.child_tasks),
                    EXIT_GRACE_S,
                    ", ".join(names),
                )
                abort()

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise P2PFLError("the peer is not running: use `async with Peer(...) as peer`")
        return self._transport

    async def __aenter__(self) -> Peer:
        self._stack = AsyncExitStack()
        await self._stack.__aenter__()
        self._lock_state_dir()
        self._stack.callback(self._unlock_state_dir)
        try:
            self._restore()
            t: Transport = await self._stack.enter_async_context(self._transport_factory(self.identity))
            self._transport = t
            t.set_gossip_validator(self._validate_gossip)
            t.set_gossip_handler(self._on_gossip)
            t.set_request_handler(DELTA_PROTOCOL, self._serve_delta)
            t.set_request_handler(SNAPSHOT_PROTOCOL, self._serve_snapshot)
            if self.config.allow is not None and hasattr(t, "set_peer_filter"):
                t.set_peer_filter(self._peer_allowed)
            self._nursery = await self._stack.enter_async_context(trio.open_nursery())
            await self._connect_static()
            if self.config.bootstrap:
                await self._start_discovery(self._nursery)
            self._nursery.start_soon(self._housekeeping)
            log.info("peer online peer=%s listen=%s", self.peer_id, " ".join(t.listen_addrs))
        except BaseException:
            await self._stack.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopped.set()
        error = exc[1] if len(exc) > 1 and isinstance(exc[1], BaseException) else None
        if error is None and self._nursery is not None and not self._nursery.cancel_scope.cancel_called:
            await self._unregister()  # a clean stop: leave the registries' listings at once
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            await self._unstick(self._nursery)
        try:
            await self._stack.__aexit__(None, None, None)
        except BaseException as crash:
            error = crash
            raise
        finally:
            self._transport = None
            self._nursery = None
            self._log_stop(error)

    def _log_stop(self, error: BaseException | None) -> None:
        """One last line: INFO for a clean stop; ERROR for an expected failure (a :class:`P2PFLError` such as a
        full disk); a crash (a bug, or an error the host app raised inside the ``async with``) is CRITICAL with
        its type, so neither reads like a clean stop."""
        where = (
            f"peer={self.peer_id} round={self.round} seq={self.engine.seq} persisted_seq={self.persisted_seq}"
        )
        if error is None or _only_cancelled(error):
            log.info("peer stopped %s", where)
            return
        leaf = _leaf(error)
        if isinstance(leaf, P2PFLError):  # an expected failure (disk full, bad state): no bug, but no clean stop
            log.error("peer failed %s error=%s: %s", where, type(leaf).__name__, leaf)
            return
        log.critical("peer crashed %s error=%s: %s", where, type(leaf).__name__, leaf)

    async def _unregister(self) -> None:
        """Withdraw our record from the registries (bounded; failures only logged): a stopped peer should not
        be handed out to others until its registration expires."""
        if self._discovery is None:
            return
        self._discovery_scope.cancel()  # no renewal may race the withdrawal
        with trio.move_on_after(UNREGISTER_TIMEOUT_S):
            try:
                n = await self._discovery.unregister()
                log.info("unregistered from %d of %d registries", n, len(self.config.bootstrap))
            except Exception as exc:
                log.info("unregister failed: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current round (safe from signal handlers in trio)."""
        self._stopped.set()

    @property
    def listen_addrs(self) -> list[str]:
        return self.transport.listen_addrs

    # ------------------------------------------------------------------------------- persistence

    def _lock_state_dir(self) -> None:
        """One running peer per state directory: a second one would interleave the version log."""
        directory = self.config.state_dir
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"state_dir {directory} is in use by another running peer") from None
        self._lock_fd = fd

    def _unlock_state_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _restore(self) -> None:
        directory = self.config.state_dir
        if directory is None:
            return
        for stale in remove_stale_temps(directory):  # left by a kill -9; we hold the directory's lock
            log.info("removed a stale temp file %s", stale.name)
        self._log = VersionLog(directory, self.identity)
        if self._log.repaired_bytes:
            log.warning(
                "version log had a torn tail of %d bytes after a crash: truncated", self._log.repaired_bytes
            )
        ckpt = load_checkpoint(directory)
        if ckpt is None:
            return
        if ckpt.peer_id != self.peer_id or ckpt.network_id != self.config.network_id:
            raise ConfigError(
                f"state_dir {directory} belongs to peer {ckpt.peer_id} in network {ckpt.network_id!r}; "
                "use another state_dir or the matching key and network id"
            )
        recovered = self._log.reconcile(ckpt.pending_log)
        if recovered:
            log.warning(
                "version log lacked %d record(s) of seq %d: appended from the checkpoint", recovered, ckpt.seq
            )
        self.persisted_seq = ckpt.seq
        self.engine.restore(ckpt.own, ckpt.public, ckpt.seq)
        self.learner.set_params(ckpt.own)
        self.round = ckpt.round
        self._log.append(
            event="restart",
            seq=ckpt.seq,
            round=ckpt.round,
            digest=self.engine.public_digest,
            reason="resumed from checkpoint",
            timestamp_ms=_now_ms(),
        )
        log.info("resumed from checkpoint round=%d seq=%d", ckpt.round, ckpt.seq)

    def _checkpoint(self, report_metrics: dict[str, float], pending_log: tuple[bytes, ...] = ()) -> None:
        directory = self.config.state_dir
        if directory is None:
            return
        save_checkpoint(
            directory,
            Checkpoint(
                peer_id=self.peer_id,
                network_id=self.config.network_id,
                seq=self.engine.seq,
                round=self.round,
                own=self.engine.own_params(),
                public=self.engine.public_params(),
                metrics=report_metrics,
                timestamp_ms=_now_ms(),
                pending_log=pending_log,
            ),
        )
        self.persisted_seq = self.engine.seq

    # ---------------------------------------------------------------------------------- network

    def _peer_allowed(self, peer_id: str) -> bool:
        return self.config.allow is None or peer_id in self.config.allow

    def neighbours(self) -> list[str]:
        """Connected peers that may be learning neighbours: every connection but a bootstrap registry's (it
        is dialled to register and discover, never learns, and must not satisfy ``min_neighbours``)."""
        registries = self._registries
        if self._discovery is not None:
            registries = registries | self._discovery.registry_peer_ids
        return [p for p in self.transport.connected_peers() if p not in registries]

    def _may_mix(self, peer_id: str) -> bool:
        return self._transport is None or peer_id in self._transport.connected_peers()

    async def connect(self, addr: str) -> str:
        return await self.transport.connect(addr)

    async def _connect_static(self) -> None:
        connected = set(self.transport.connected_peers())
        for addr in self.config.static_peers:
            if addr.rpartition("/p2p/")[2] in connected:
                continue  # dialling a connected peer again could race its own dial into a duplicate link
            try:
                await self.transport.connect(addr)
            except TransportError as exc:
                log.info("static peer not reachable yet addr=%s reason=%s", addr, exc)

    async def _start_discovery(self, nursery: trio.Nursery) -> None:
        """Register with the bootstrap registries (renewed in the background) and dial the peers they, or
        the peer cache when every registry is down, know of. Only signed peer records are dialled."""
        from p2pfl.discovery import BootstrapClient, PeerCache

        cache = None
        if self.config.state_dir is not None:
            cache = PeerCache.in_state_dir(
                self.config.state_dir, network_id=self.config.network_id, own_peer_id=self.peer_id
            )
        self._discovery = BootstrapClient(
            self.transport,
            self.identity,
            self.config.network_id,
            self.config.bootstrap,
            ttl=self.config.bootstrap_ttl,
            advertise=list(self.config.advertise) or None,
            cache=cache,
        )
        await nursery.start(self._renewal)
        await self.discover()
        nursery.start_soon(self._discovery_loop)

    async def _renewal(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._discovery_scope:  # cancelled first on a clean stop (see _unregister)
            await self._discovery.run_renewal(task_status=task_status)

    async def discover(self) -> int:
        """Dial known peers of the network (registries first, then the peer cache); returns how many new."""
        from p2pfl.discovery import dial_record

        if self._discovery is None:
            return 0
        records = await self._discovery.find_peers()
        connected = set(self.neighbours())
        dialled = 0
        for record in records:
            if len(connected) >= self.config.max_neighbours:
                break
            pid = record.peer_id
            if (
                pid in connected
                or pid == self.peer_id
                or pid in self._registries
                or pid in self._discovery.registry_peer_ids
                or self.engine.is_evicted(pid)
                or not self._peer_allowed(pid)
            ):
                continue
            if await dial_record(self.transport, record) is not None:
                connected.add(pid)
                dialled += 1
        return dialled

    async def _discovery_loop(self) -> None:
        while True:
            await trio.sleep(self.config.discover_interval_s)
            try:
                new = await self.discover()
            except P2PFLError as exc:
                log.info("discovery failed: %s", exc)
                continue
            except Exception as exc:  # a registry's answer must never end the peer: retried next interval
                self._unexpected(None, "discovery", exc)
                continue
            if new:
                log.info("discovery: dialled %d new peers", new)

    async def _join(self, adopt: bool) -> None:
        """Fetch snapshots from the connected peers: they seed the replicas, and the own model starts from
        their median (a fresh peer, ``adopt``) or from the median of theirs and its own (a peer resuming from
        its checkpoint) if at least ``join_quorum`` answered. Peers that did not answer are asked again
        (a connection resynced at start-up loses its requests) until ``join_timeout_s`` has passed."""
        snaps: dict[str, bytes] = {}
        timeout = min(self.config.join_timeout_s, self.config.request_timeout_s)

        async def fetch(peer: str) -> None:
            try:
                snaps[peer] = await self.transport.request(
                    peer, SNAPSHOT_PROTOCOL, b"", max_response=self.config.max_model_bytes, timeout=timeout
                )
            except TransportError as exc:
                log.debug("join: no snapshot from %s: %s", peer, exc)
                self.engine.snapshot_failed(peer, exc.reason)
            except Exception as exc:
                self._unexpected(peer, "join snapshot fetch", exc)

        with trio.move_on_after(self.config.join_timeout_s):
            for attempt in range(_JOIN_ATTEMPTS):
                missing = [p for p in self.neighbours() if p not in snaps]
                if not missing or (attempt and len(snaps) >= self.config.join_quorum):
                    break
                if attempt:
                    await trio.sleep(_JOIN_RETRY_S)
                async with trio.open_nursery() as n:
                    for peer in missing:
                        n.start_soon(fetch, peer)
        if not snaps:
            return
        try:
            used = self.engine.join_from_snapshots(snaps, trio.current_time(), resume=not adopt)
        except Exception as exc:  # each snapshot is checked on its own (never raises): this is a bug
            self._unexpected(None, "join", exc)
            return
        finally:
            self._log_faults()
            self._log_rejections()
        if used >= self.config.join_quorum:
            self.learner.set_params(self.engine.own_params())
            log.info("%s from the median of %d snapshots", "joined" if adopt else "resumed", used)

    def _validate_gossip(self, via: str, data: bytes) -> bool:
        """The transport's gossip validator: the engine's check, which must never raise (see _unexpected)."""
        try:
            return self.engine.accept_gossip(data, via)
        except Exception as exc:
            self._unexpected(via, "gossip validation", exc)
            return False
        finally:
            self._log_faults()

    async def _on_gossip(self, via: str, data: bytes) -> None:
        try:
            applied = self.engine.applied
            actions = self.engine.handle_announce(data, via, trio.current_time())
            if self.engine.applied != applied:
                self._replica_updated.set()
            await self._execute(actions)
        except Exception as exc:
            self._unexpected(via, "gossip delivery", exc)
        finally:
            self._log_faults()
            self._log_rejections()

    async def _serve_delta(self, peer: str, request: bytes) -> bytes:
        if len(request) != DIGEST_SIZE:
            raise TransportError(
                f"a delta request is a {DIGEST_SIZE}-byte payload digest, got {len(request)}"
            )
        payload = self.engine.serve_payload(request)
        if payload is None:
            raise TransportError("unknown payload digest (evicted from the cache or never seen)")
        return payload

    async def _serve_snapshot(self, peer: str, request: bytes) -> bytes:
        if request:
            raise TransportError(f"a snapshot request is empty, got {len(request)} bytes")
        return self.engine.serve_snapshot(_now_ms())

    def _unexpected(self, peer: str | None, where: str, exc: Exception) -> None:
        """An exception escaped the handling of ``peer``'s input (every expected refusal is a counted reason,
        so this is a bug of ours or a decoder that is not total): count ``internal_error`` against the peer,
        log one line, and go on. Only that message, stream or fetch is lost."""
        self.engine.reject(INTERNAL_ERROR, peer)
        self._log_fault(peer, where, exc)

    def _log_faults(self) -> None:
        for fault in self.engine.take_faults():
            self._log_fault(fault.peer, fault.where, fault.error)

    def _log_fault(self, peer: str | None, where: str, exc: BaseException) -> None:
        key = (peer, type(exc).__name__)
        now = time.monotonic()
        if now - self._fault_logged.get(key, -math.inf) < _FAULT_LOG_INTERVAL_S:
            return
        if len(self._fault_logged) >= 1024:  # bounded however many identities send bad input
            self._fault_logged.clear()
        self._fault_logged[key] = now
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

    async def _execute(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, Publish):
                try:
                    await self.transport.broadcast(action.envelope)
                except TransportError as exc:
                    log.warning("publish failed seq=%d reason=%s", action.seq, exc)
            elif isinstance(action, FetchPayload | RequestSnapshot):
                assert self._nursery is not None
                self._nursery.start_soon(self._fetch, action)
            elif isinstance(action, Evict):
                log.warning("evicting peer=%s reason=%s", action.peer, action.reason)
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
                )
                t = self.transport
                if hasattr(t, "unblock"):
                    t.unblock(action.peer)

    async def _fetch(self, action: FetchPayload | RequestSnapshot) -> None:
        """Carry out one fetch; whatever the remote sends, this ends as a count, never as an exception (it
        runs in the peer's nursery, where an exception would stop the peer)."""
        try:
            await self._fetch_from(action)
        except Exception as exc:
            if isinstance(action, FetchPayload):  # counted once, and a later announcement may retry
                self.engine.fetch_failed(action.header, INTERNAL_ERROR, action.peer)
                self._log_fault(action.peer, "fetch", exc)
            else:
                self._unexpected(action.peer, "fetch", exc)
        finally:
            self._log_faults()
            self._log_rejections()

    async def _fetch_from(self, action: FetchPayload | RequestSnapshot) -> None:
        peers = [action.peer] if action.via == action.peer else [action.peer, action.via]
        protocol = DELTA_PROTOCOL if isinstance(action, FetchPayload) else SNAPSHOT_PROTOCOL
        body = action.header.payload_digest if isinstance(action, FetchPayload) else b""
        # a payload's exact size is signed (and checked against the model); a snapshot is bounded by config
        limit = (
            action.header.payload_size if isinstance(action, FetchPayload) else self.config.max_model_bytes
        )
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
                    peer, protocol, body, max_response=limit, timeout=self.config.request_timeout_s
                )
            except TransportError as exc:
                # counted against the peer that failed, by what failed (oversize, timeout, bad_response,
                # unavailable); the next peer, if any, is tried
                (log.info if isinstance(exc, ResponseTooLargeError) else log.debug)(
                    "fetch from %s failed: %s", peer, exc
                )
                if isinstance(action, FetchPayload):
                    self.engine.fetch_failed(action.header, exc.reason, peer)
                else:
                    self.engine.snapshot_failed(peer, exc.reason)
                # a framing violation, or more bytes than the signed size, is provably the responder's
                if exc.reason == "bad_response" or (
                    exc.reason == "oversize" and isinstance(action, FetchPayload)
                ):
                    self._penalise(peer)
                continue
            now = trio.current_time()
            before = dict(self.engine.rejections_by_peer.get(peer, {}))
            try:
                if isinstance(action, FetchPayload):
                    follow = self.engine.handle_payload(action.header, data, now, peer)
                else:
                    follow = self.engine.handle_snapshot(data, action.peer, now)
            except Exception as exc:  # the engine refuses bad bytes by reason; this is a bug of ours
                if isinstance(action, FetchPayload):
                    self.engine.fetch_failed(action.header, INTERNAL_ERROR, peer)
                    self._log_fault(peer, f"{protocol} response", exc)
                else:
                    self._unexpected(peer, f"{protocol} response", exc)
                return
            after: Mapping[str, int] = self.engine.rejections_by_peer.get(peer, {})
            if any(n > before.get(r, 0) for r, n in after.items() if r not in _NOT_PROVABLE):
                self._penalise(peer)
            self._replica_updated.set()
            await self._execute(follow)
            return
        if not tried:  # nobody to ask: neither the sender nor the relay is connected
            if isinstance(action, FetchPayload):
                self.engine.fetch_failed(action.header, "unavailable")
            else:
                self.engine.snapshot_failed(action.peer, "unavailable")

    def _penalise(self, peer: str) -> None:
        """Lower ``peer``'s gossipsub score for an invalid response, as gossipsub does for invalid gossip: a
        neighbour that keeps serving bad bytes falls below the gossip, publish and graylist thresholds."""
        penalise = getattr(self.transport, "penalise", None)
        if penalise is not None:
            penalise(peer, INVALID_RESPONSE_PENALTY)

    def _log_rejections(self) -> None:
        now = time.monotonic()
        for peer, counts in self.engine.rejections_by_peer.items():
            if now - self._rejection_logged.get(peer, -math.inf) >= 10.0 and counts:
                self._rejection_logged[peer] = now
                log.info("rejected messages peer=%s counts=%s", peer, dict(counts))

    async def _housekeeping(self) -> None:
        while True:
            await trio.sleep(
                min(self.config.reconnect_interval_s or 5.0, self.config.status_interval_s or 5.0)
            )
            await self._connect_static()  # re-dials the static peers that are not connected
            if (
                self.config.status_interval_s
                and time.monotonic() - self._last_status >= self.config.status_interval_s
            ):
                self._last_status = time.monotonic()
                log.info("status %s", _format_status(self.status()))
            await self.write_status()

    # ------------------------------------------------------------------------------------ rounds

    async def run(
        self, rounds: int | None = None, *, until: Callable[[], bool] | None = None
    ) -> list[RoundReport]:
        """Run rounds until ``rounds`` more are done, ``until()`` is true, or :meth:`stop` is called."""
        done: list[RoundReport] = []
        if not self._started:
            self._started = True
            await self._await_neighbours()
            if self.config.join_on_start:
                await self._join(adopt=self.engine.seq == 0)
        while not self._stopped.is_set() and (rounds is None or len(done) < rounds):
            if until is not None and until():
                break
            if done or self.round > 0:
                await self._wait_for_neighbours()
            started = trio.current_time()
            done.append(await self.step())
            wait = self.config.round_interval_s - (trio.current_time() - started)
            if wait > 0:
                with trio.move_on_after(wait):
                    await self._stopped.wait()
        return done

    async def _await_neighbours(self) -> None:
        """Before the first round, wait (at most ``start_timeout_s``) for ``min_neighbours`` connections:
        a peer that starts learning alone drifts away on its own data before the others come online."""
        with trio.move_on_after(self.config.start_timeout_s) as scope:
            while len(self.neighbours()) < self.config.min_neighbours:
                if self._stopped.is_set():
                    return
                await trio.sleep(0.1)
        if scope.cancelled_caught:
            log.warning(
                "starting with %d of min_neighbours=%d neighbours after %.0f s",
                len(self.neighbours()),
                self.config.min_neighbours,
                self.config.start_timeout_s,
            )
            return
        # Then let every connected learner subscribe to our announcements (bounded): a first version
        # published before a neighbour subscribed never reaches it, and a neighbour that hears only one of its
        # peers in its first rounds mixes that one alone, poisoner or not (measured: 2 of 6 runs of a 4-peer
        # libp2p scenario where honest peers mixed only a sign-flipper's model for 3 rounds and ended < 50%).
        with trio.move_on_after(SUBSCRIBE_GRACE_S + 1.0):
            while not self._stopped.is_set() and self._unsubscribed(trio.current_time()):
                await trio.sleep(0.05)

    def _note_connected(self, peers: list[str], now: float) -> None:
        for p in peers:
            self._first_seen.setdefault(p, now)
        if len(self._first_seen) > len(peers):
            live = set(peers)
            for p in [p for p in self._first_seen if p not in live]:
                del self._first_seen[p]

    def _unsubscribed(self, now: float) -> list[str]:
        """Connected peers not (yet) subscribed to our announcements that connected less than
        ``SUBSCRIBE_GRACE_S`` ago; after that a peer is taken for a non-learner (e.g. a registry)."""
        connected = self.neighbours()
        self._note_connected(connected, now)
        listeners = set(self.transport.listeners())
        return [p for p in connected if p not in listeners and now - self._first_seen[p] < SUBSCRIBE_GRACE_S]

    def _fresh_neighbours(self) -> tuple[int, int, int]:
        """(neighbours updated since the last mix, neighbours still publishing, connected neighbours).

        A neighbour counts as publishing if we applied a version of it within ``max_round_wait_s``; one that
        went quiet (stopped, finished its rounds, or of another network) is not waited for.
        """
        now = trio.current_time()
        connected = self.neighbours()
        self._note_connected(connected, now)
        listeners = set(self.transport.listeners())
        peers = [p for p in connected if not self.engine.is_evicted(p)]
        fresh = active = pending = 0
        for p in peers:
            rep = self.engine.replicas.get(p)
            if rep is not None and now - rep.updated_at <= self.config.max_round_wait_s:
                active += 1
                fresh += rep.updated_at > self._last_mix
            elif rep is None and p in listeners and now - self._first_seen[p] <= self.config.max_round_wait_s:
                pending += 1  # a learner whose first version is on its way
        if active < 2:
            # Mixing a lone neighbour model leaves it unjudged (no score can tell one model from its peers):
            # wait for the first versions of the other learners too. Only then: with two or more publishing
            # neighbours a newcomer (or a lurker that never publishes) does not hold up the rounds.
            active += pending
        return fresh, active, len(peers)

    async def _wait_for_neighbours(self) -> None:
        """Self-clocking without global rounds: wait until ``wait_fraction`` of the publishing neighbours sent
        a new version since our last mix (at most ``max_round_wait_s``), so a fast peer does not race ahead
        on its own data while its neighbours' updates are in flight. A peer with no neighbour at all waits
        the full ``max_round_wait_s`` per round: training alone gains little and would leave it far from the
        network it is about to join."""
        with trio.move_on_after(self.config.max_round_wait_s):
            while not self._stopped.is_set():
                fresh, active, connected = self._fresh_neighbours()
                if connected and fresh >= max(1, math.ceil(self.config.wait_fraction * active)):
                    return
                self._replica_updated = trio.Event()
                with trio.move_on_after(0.5):  # re-check now and then: connections and quiet peers change
                    await self._replica_updated.wait()

    async def step(self) -> RoundReport:
        """One round: train, score, mix, persist, publish."""
        async with self._round_lock:
            return await self._step()

    async def _step(self) -> RoundReport:
        t0 = trio.current_time()
        await self._execute(self.engine.readmissions(t0))
        learner = self.learner
        start = self.engine.own_params()
        learner.set_params(start)
        train = await trio.to_thread.run_sync(learner.train, self.config.local_steps)
        trained = learner.get_params()
        if not all(np.isfinite(v).all() for v in trained.values()):
            # a diverged local step must never reach the network (the wire would refuse it anyway)
            self.local_divergences += 1
            log.error("local training diverged (non-finite parameters): this round's update is discarded")
            trained = start
            learner.set_params(start)
        now = trio.current_time()
        candidates = self.engine.mixing_candidates(now)
        val_losses: dict[str, float] | None = None
        own_val: float | None = None
        trained_eval: EvalResult | None = None
        if self.config.scoring_enabled and self.config.val_scoring and candidates:
            layout = self.engine.layout
            # A replica's loss on our (fixed) validation split changes only with its version: an unchanged
            # one is not evaluated again (a neighbour slower than us would otherwise cost one evaluation
            # per own round).
            peers = {r.peer for r in candidates}
            known = {p: v for p, v in self._val_losses.items() if p in peers}
            todo = {r.peer: r for r in candidates if known.get(r.peer, (None,))[0] != r.version}

            def evaluate_all() -> tuple[dict[str, float], EvalResult]:
                losses = {p: learner.evaluate(layout.unflatten(r.vec)).loss for p, r in todo.items()}
                return losses, learner.evaluate(trained)

            fresh_losses, evaluated = await trio.to_thread.run_sync(evaluate_all)
            known.update({p: (todo[p].version, loss) for p, loss in fresh_losses.items()})
            self._val_losses = known
            self.val_evaluations += len(todo)
            losses = {r.peer: known[r.peer][1] for r in candidates}
            trained_eval = evaluated
            if math.isfinite(evaluated.loss):
                val_losses, own_val = losses, evaluated.loss
        elif self.config.mix_guard_margin is not None and candidates:
            trained_eval = await trio.to_thread.run_sync(learner.evaluate, trained)
        self.round += 1
        outcome: RoundOutcome = self.engine.finish_round(
            trained,
            trio.current_time(),
            meta=Meta(samples=train.samples, loss=_finite_or_none(train.loss), round=self.round),
            timestamp_ms=_now_ms(),
            val_losses=val_losses,
            own_val_loss=own_val,
            candidates=self.engine.mixing_candidates(trio.current_time()),
        )
        self._last_mix = trio.current_time()
        mixed = self.engine.own_params()
        learner.set_params(mixed)
        ev = await trio.to_thread.run_sync(learner.evaluate)
        mix_refused = False
        margin = self.config.mix_guard_margin
        if (
            margin is not None
            and self.round > self.config.mix_guard_warmup
            and trained_eval is not None
            and trained_eval.accuracy is not None
            and (ev.accuracy is None or ev.accuracy < trained_eval.accuracy * (1.0 - margin))
        ):
            self.engine.set_own(trained)
            learner.set_params(trained)
            log.warning(
                "mix refused round=%d mix_accuracy=%s trained_accuracy=%.4f: keeping the trained model",
                self.round,
                "-" if ev.accuracy is None else f"{ev.accuracy:.4f}",
                trained_eval.accuracy,
            )
            ev = trained_eval
            mix_refused = True
            self.mixes_refused += 1
        self.last_eval = ev
        rolled_back = False
        if self._guard is not None and ev.accuracy is not None:
            back = self._guard.observe(self.round, ev.accuracy, mixed)
            if back is not None:
                best_round, best_acc, params = back
                self.engine.set_own(params)
                learner.set_params(params)
                rolled_back = True
                log.warning(
                    "rollback round=%d accuracy=%.4f best_round=%d best_accuracy=%.4f",
                    self.round,
                    ev.accuracy,
                    best_round,
                    best_acc,
                )
        metrics = {"train_loss": train.loss, "val_loss": ev.loss}
        if ev.accuracy is not None:
            metrics["val_accuracy"] = ev.accuracy
        await trio.to_thread.run_sync(self._persist, outcome, metrics, rolled_back, mix_refused)
        await self._execute(outcome.actions)
        await self.write_status()
        report = RoundReport(
            round=self.round,
            seq=outcome.seq,
            train_loss=train.loss,
            val_loss=ev.loss,
            val_accuracy=ev.accuracy,
            neighbours=len(self.neighbours()),
            mixed=len(outcome.contributions),
            evicted=outcome.evicted,
            rolled_back=rolled_back,
            duration_s=trio.current_time() - t0,
            mix_refused=mix_refused,
        )
        self.reports.append(report)
        return report

    async def write_status(self) -> None:
        """``state_dir/status.json``: the status line as JSON, for operators and scripts (atomic)."""
        if self.config.state_dir is not None:
            data = json.dumps(self.status(), indent=2, sort_keys=True).encode()  # on the loop: consistent
            path = self.config.state_dir / "status.json"
            try:
                await trio.to_thread.run_sync(atomic_write, path, data)
            except OSError as exc:
                raise StateError(
                    f"cannot write {path}: {exc.strerror or exc}; state holds seq {self.persisted_seq}"
                ) from exc

    def _persist(
        self, outcome: RoundOutcome, metrics: dict[str, float], rolled_back: bool, mix_refused: bool
    ) -> None:
        """Checkpoint, then version log; the checkpoint carries the signed records, so a failed log append
        loses nothing (the next start appends them: ``VersionLog.reconcile``)."""
        if self._log is None:
            self._checkpoint(metrics)
            return
        contributions = [
            {
                "peer": c.peer,
                "seq": c.seq,
                "weight": c.weight,
                "score": c.score,
                "status": c.status,
                **_components(outcome.scores.get(c.peer)),
            }
            for c in outcome.contributions
        ]
        entries: list[dict[str, Any]] = [
            {
                "event": "version",
                "seq": outcome.seq,
                "round": self.round,
                "digest": outcome.digest,
                "contributions": contributions,
                "metrics": metrics,
                "timestamp_ms": _now_ms(),
            }
        ]
        notes = []  # what else happened to this version, each its own signed record
        if mix_refused:
            notes.append(
                (
                    "mix_refused",
                    f"the mix lost over {self.config.mix_guard_margin:.0%} of the trained accuracy",
                ),
            )
        if rolled_back:
            notes.append(
                (
                    "rollback",
                    f"validation accuracy fell over {self.config.rollback_margin} below a recent version",
                )
            )
        for event, reason in notes:
            entries.append(
                {
                    "event": event,
                    "seq": outcome.seq,
                    "round": self.round,
                    "digest": outcome.digest,
                    "metrics": metrics,
                    "reason": reason,
                    "timestamp_ms": _now_ms(),
                }
            )
        records = self._log.prepare(entries)
        self._checkpoint(metrics, tuple(r.encoded() for r in records))
        try:
            self._log.commit(records)
        except StateError as exc:
            raise StateError(
                f"{exc}; the checkpoint holds seq {self.persisted_seq} and its records, which the next "
                "start appends"
            ) from exc.__cause__

    # ------------------------------------------------------------------------------------ status

    def params(self) -> Params:
        """The current own (mixed) model."""
        return self.engine.own_params()

    def status(self) -> dict[str, Any]:
        stats = self._transport.stats if self._transport is not None else None
        ev = self.last_eval
        return {
            "peer_id": self.peer_id,
            "network_id": self.config.network_id,
            "round": self.round,
            "seq": self.engine.seq,
            "val_loss": ev.loss if ev else None,
            "val_accuracy": ev.accuracy if ev else None,
            "neighbours": len(self.neighbours()) if self._transport else 0,
            "replicas": len(self.engine.replicas),
            "bytes_sent": stats.bytes_sent if stats else 0,
            "bytes_received": stats.bytes_received if stats else 0,
            "rejected": dict(self.engine.rejections),
            "duplicates": self.engine.duplicates,
            "mixes_refused": self.mixes_refused,
            "evicted": sorted(self.engine.scorer.evicted()) if self.engine.scorer else [],
        }


def _format_status(s: Mapping[str, Any]) -> str:
    acc = s["val_accuracy"]
    return (
        f"round={s['round']} seq={s['seq']} val_acc={'-' if acc is None else f'{acc:.4f}'} "
        f"neighbours={s['neighbours']} replicas={s['replicas']} bytes_out={s['bytes_sent']} "
        f"bytes_in={s['bytes_received']} rejected={sum(s['rejected'].values())} evicted={len(s['evicted'])}"
    )


def _components(record: ScoreRecord | None) -> dict[str, float | None]:
    """A score's evidence for the version log, so an eviction can be explained afterwards: the distance ratio,
    the cosine and the loss score (``None`` where not computed)."""
    if record is None:
        return {}
    return {
        "r": _finite_or_none(record.distance),
        "cos": None if record.cosine is None else _finite_or_none(record.cosine),
        "loss": record.loss_score,
    }


def _leaf(error: BaseException) -> BaseException:
    """The first non-group exception inside ``error`` (nurseries wrap a task's crash in groups)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _only_cancelled(error: BaseException) -> bool:
    """True if ``error`` is (a group of) cancellations or an interrupt: a stop, not a crash."""
    if isinstance(error, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in error.exceptions)
    return isinstance(error, trio.Cancelled | KeyboardInterrupt | SystemExit | GeneratorExit)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------------- sync handle


class PeerHandle:
    """A running :class:`Peer` for non-trio programs: trio runs in a thread of its own.

    All methods are thread-safe. ``start`` returns once the peer is online (or raises its start-up error).
    """

    def __init__(self, peer: Peer, rounds: int | None) -> None:
        self.peer = peer
        self._rounds = rounds
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main, name=f"p2pfl-peer-{peer.peer_id[-8:]}", daemon=True
        )
        self._finished = threading.Event()

    @classmethod
    def start(
        cls,
        config: PeerConfig,
        learner: Learner,
        identity: Identity | None = None,
        *,
        rounds: int | None = None,
        transport: TransportFactory | None = None,
        timeout: float = 60.0,
    ) -> PeerHandle:
        handle = cls(Peer(config, learner, identity, transport=transport), rounds)
        handle._thread.start()
        if not handle._ready.wait(timeout):
            raise P2PFLError(f"peer did not come online within {timeout} s")
        if handle._error is not None:
            raise handle._error
        return handle

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            try:
                async with self.peer:
                    self._ready.set()
                    await self.peer.run(self._rounds)
                    await self.peer._stopped.wait()
            except BaseException as exc:
                self._error = exc
                raise

        try:
            trio.run(main)
        except BaseException as exc:
            self._error = self._error or exc
        finally:
            self._ready.set()
            self._finished.set()

    def _call(self, fn: Callable[[], Any]) -> Any:
        if self._token is None or self._finished.is_set():
            raise P2PFLError("the peer is not running")
        return trio.from_thread.run_sync(fn, trio_token=self._token)

    @property
    def peer_id(self) -> str:
        return self.peer.peer_id

    @property
    def listen_addrs(self) -> list[str]:
        return list(self._call(lambda: self.peer.listen_addrs))

    def status(self) -> dict[str, Any]:
        return dict(self._call(self.peer.status))

    def params(self) -> Params:
        return dict(self._call(self.peer.params))

    def connect(self, addr: str) -> str:
        if self._token is None or self._finished.is_set():
            raise P2PFLError("the peer is not running")
        try:
            return str(trio.from_thread.run(self.peer.connect, addr, trio_token=self._token))
        except trio.RunFinishedError:
            raise P2PFLError("the peer is not running") from None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the peer stops (its rounds are done and it was stopped); True if it did."""
        return self._finished.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if not self._finished.is_set() and self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self.peer.stop, trio_token=self._token)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise P2PFLError(f"peer did not stop within {timeout} s")
        if self._error is not None and not isinstance(self._error, trio.Cancelled | KeyboardInterrupt):
            raise self._error

    def __enter__(self) -> PeerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
