"""The peer: protocol engine + transport + learner + durable state, on trio.

``Peer`` is the one place where the network, the clock, threads and the disk meet the pure engine. Use it as
an async context manager from trio code::

    async with p2pfl.Peer(config, learner) as peer:
        await peer.run(rounds=20)

or, from any other program (threads, asyncio), through :class:`PeerHandle`, which runs the same ``Peer`` in
its own trio thread and exposes thread-safe ``start``/``stop``/``status``/``params``.

Each round (``peer_rounds.RoundLoop``): wait for the neighbours' new versions, train in a worker thread,
evaluate, let the engine publish and mix, let the own-data guards decide what the round keeps, persist,
then broadcast and evict.

The policies are pure and live in ``p2pfl.protocol`` (pacing, guards, join, logs); the peer asks them
with trio's clock, so a test's MockClock drives every wait. Around the class: ``peer_rounds`` (the round
loop), ``peer_exchange`` (the network side), ``peer_discovery`` (bootstrap registries), ``peer_store``
(disk), ``peer_status`` (the status and the stop line), ``peer_handle`` (non-trio host programs),
``peer_wiring`` (building the parts and attaching them to the transport) and ``peer_access`` (the
allow-list and the roster: who may connect, send and be mixed; a base of :class:`Peer`). This module keeps
the lifecycle (entering, leaving, the housekeeping) and the public API.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import trio

from p2pfl.config.schema import PeerConfig as PeerConfig  # noqa: PLC0414 - re-exported from its old home
from p2pfl.errors import P2PFLError, TransportError
from p2pfl.identity import Identity
from p2pfl.learner import EvalResult, Learner
from p2pfl.logs import event, round_event
from p2pfl.peer_access import PeerAccess, build_access
from p2pfl.peer_handle import PeerHandle as PeerHandle  # noqa: PLC0414 (re-export)
from p2pfl.peer_rounds import SUBSCRIBE_GRACE_S as SUBSCRIBE_GRACE_S  # noqa: PLC0414 (re-export)
from p2pfl.peer_rounds import Params as Params  # noqa: PLC0414 (re-export)
from p2pfl.peer_rounds import RoundReport as RoundReport  # noqa: PLC0414 (re-export)
from p2pfl.peer_rounds import RunSync as RunSync  # noqa: PLC0414 (re-export)
from p2pfl.peer_rounds import guard_config as guard_config  # noqa: PLC0414 (re-export)
from p2pfl.peer_rounds import pacing_config as pacing_config  # noqa: PLC0414 (re-export)
from p2pfl.peer_serve import serve_until_stopped
from p2pfl.peer_status import log_stop, peer_status
from p2pfl.peer_store import PeerStore, ban_entry, format_status, now_ms
from p2pfl.peer_wiring import TransportFactory as TransportFactory  # noqa: PLC0414 (re-export)
from p2pfl.peer_wiring import (
    attach_transport,
    build_discovery,
    build_engine,
    build_exchange,
    build_metrics,
    build_rotation,
    build_rounds,
    export_privacy,
    libp2p_factory,
)
from p2pfl.privacy.runtime import PeerPrivacy
from p2pfl.protocol.dialling import DIAL_GRACE_S, addr_peer_id, static_dials
from p2pfl.rollout import Rollout
from p2pfl.state import read_log
from p2pfl.transport.base import Transport

if TYPE_CHECKING:
    from p2pfl.metrics.peer_metrics import PeerMetrics
    from p2pfl.secagg.channel import TransportChannel
    from p2pfl.secagg.runtime import GroupMember

log = logging.getLogger("p2pfl.peer")

#: the most chosen peers kept (``Peer.choose``): registries' records are anyone's to fill in an open network
MAX_CHOSEN = 4096

#: How long a stopping peer waits for its cancelled tasks before it aborts the transport's connections.
EXIT_GRACE_S = 3.0


class Peer(PeerAccess):
    """A p2pfl peer node. Enter it (``async with``) to go online; leave it to shut down cleanly."""

    def __init__(
        self,
        config: PeerConfig,
        learner: Learner,
        identity: Identity | None = None,
        *,
        transport: TransportFactory | None = None,
        run_sync: RunSync | None = None,
        metrics: Any = None,
    ) -> None:
        """``metrics``: None (the config's ``[metrics] listen``, if any), ``"HOST:PORT"`` (serve there), a
        ``prometheus_client.CollectorRegistry`` to register the peer's metrics in, True (collect, serve only
        what the config says) or False (off, whatever the config says); see docs/operations.md."""
        self.config = config
        #: runs blocking work (training, evaluation, disk) off the event loop; tests may run it inline
        self._run_sync: RunSync = run_sync or trio.to_thread.run_sync
        self.learner = learner
        self.identity = identity or Identity.generate()
        self._transport_factory = transport or libp2p_factory(config, self._secagg_cap)
        self._transport: Transport | None = None
        self._nursery: trio.Nursery | None = None
        self._stopped = trio.Event()
        self._last_status = -math.inf
        #: static peer -> since when it is unconnected (p2pfl.protocol.dialling)
        self._unconnected_since: dict[str, float] = {}
        #: status.json as last written, and when (the housekeeping skips a write that changes nothing)
        self._status_written: tuple[bytes, float] = (b"", -math.inf)
        #: membership of a closed network (``[access] roster``); None: open network
        self.access = build_access(config, self.identity.peer_id)
        self._registries = frozenset(addr_peer_id(a) for a in config.bootstrap)
        #: the peers this peer linked to itself: its static peers and every peer :meth:`connect` dialled
        #: (discovery, rotation, the host), or :meth:`choose` named; ``mix_scope = "chosen"`` mixes only these
        self._static_ids = frozenset(addr_peer_id(a) for a in config.static_peers)
        self.chosen: set[str] = set(self._static_ids)
        #: whether this peer ever chose a link (static peers, a dial, :meth:`choose`): one that did never
        #: falls back to mixing every connected peer, even when its chosen links have all ended
        self.has_chosen = bool(self._static_ids)
        self.engine = build_engine(self)
        self.store = PeerStore(config.state_dir, self.identity, config.network_id)
        self.exchange = build_exchange(self)
        #: differential privacy (``[privacy]``, docs/privacy.md): calibrates the noise now; None when off
        self.privacy = (
            PeerPrivacy(config.privacy, learner, config.local_steps) if config.privacy.enabled else None
        )
        #: the peer's Prometheus metrics (None: off); ``docs/operations.md``
        self.metrics: PeerMetrics | None = None
        self._metrics_listen = build_metrics(self, metrics)
        export_privacy(self)
        self.discovery = build_discovery(self)
        #: quality deltas and the version served to the host (p2pfl.rollout, docs/rollout.md)
        self.rollout = Rollout(
            config.rollout, learner, config.state_dir, self.identity.peer_id, config.network_id
        )
        #: the secure-aggregation group member (p2pfl.secagg.runtime.GroupMember): built on entry over the
        #: transport when ``[secagg] enabled``, or set by the simulation's hub; None: this peer publishes its
        #: own trained model
        self.secagg: GroupMember | None = None
        #: the group channel over the transport (``[secagg] enabled``; p2pfl.secagg.channel)
        self.secagg_channel: TransportChannel | None = None
        #: link rotation (``[peer] rotate_every``, p2pfl.peer_rotation); None: off
        self.rotation = build_rotation(self)
        #: the round loop: owns the round counter, the reports and the guards' state
        self.rounds = build_rounds(self)

    def _secagg_cap(self) -> int:
        """The request size a secagg group needs (0: no group); see p2pfl.secagg.channel.message_cap."""
        if not self.config.secagg.enabled:
            return 0
        from p2pfl.secagg.channel import message_cap

        return message_cap(len(self.config.secagg.members), int(self.engine.layout.size))

    def _on_round(self, report: RoundReport) -> None:
        log.info(
            "round done round=%d seq=%d duration_s=%.3f",
            report.round,
            report.seq,
            report.duration_s,
            extra=round_event(report, self.peer_id),
        )
        if self.metrics is not None:
            self.metrics.on_round(report)

    # --------------------------------------------------------------------------------- lifecycle

    def _running_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise P2PFLError("the peer is not running: use `async with Peer(...) as peer`")
        return self._nursery

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
        self.store.lock()
        self._stack.callback(self.store.unlock)
        try:
            self._restore()
            if self.metrics is not None and self._metrics_listen is not None:
                host, port = self.metrics.serve(self._metrics_listen)  # a port in use stops the start here
                self._stack.push_async_callback(self.metrics.aclose)
                log.info("metrics endpoint http://%s:%d/metrics", host, port)
            t: Transport = await self._stack.enter_async_context(self._transport_factory(self.identity))
            self._transport = t
            attach_transport(self, t)  # handlers, validators, filters, the secagg group
            await self._block_restored_bans(t)
            self._nursery = await self._stack.enter_async_context(trio.open_nursery())
            if self.secagg_channel is not None:
                self._nursery.start_soon(self.secagg_channel.run)
            await self._connect_static()
            if self.config.bootstrap:
                await self.discovery.start(self._nursery)
            if self._needs_housekeeping():
                self._nursery.start_soon(self._housekeeping)
            if self.metrics is not None:
                self.metrics.bind()
            if self.access is not None:
                self._nursery.start_soon(self._refresh_access)
            log.info(
                "peer online peer=%s listen=%s",
                self.peer_id,
                " ".join(t.listen_addrs),
                extra=event("start", peer_id=self.peer_id, listen=t.listen_addrs),
            )
        except BaseException:
            await self._stack.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopped.set()
        error = exc[1] if len(exc) > 1 and isinstance(exc[1], BaseException) else None
        if error is None and self._nursery is not None and not self._nursery.cancel_scope.cancel_called:
            await self.discovery.unregister()  # a clean stop: leave the registries' listings at once
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            await _unstick(self._nursery, self._transport)
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
        log_stop(self, error)  # p2pfl.peer_status

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current round (safe from signal handlers in trio)."""
        self._stopped.set()

    async def serve(self) -> None:
        """After the last round: serve the neighbours until :meth:`stop`, still forgetting idle identities
        (p2pfl.peer_serve)."""
        await serve_until_stopped(self.engine, self._stopped, self.exchange.execute)

    @property
    def listen_addrs(self) -> list[str]:
        return self.transport.listen_addrs

    # ------------------------------------------------------------------------------- persistence

    @property
    def persisted_seq(self) -> int | None:
        """The version the checkpoint holds (None: none yet)."""
        return self.store.persisted_seq

    def _restore(self) -> None:
        ckpt = self.store.restore()
        if self.config.state_dir is not None:  # what the log's rollout records say is served
            self.rollout.restore(read_log(self.config.state_dir))
        if ckpt is None:
            return
        # the held version's own meta; an older checkpoint kept none: no round claimed rather than a wrong one
        self.engine.restore(ckpt.own, ckpt.public, ckpt.seq, ckpt.public_meta)
        entries = tuple(ban_entry(b, now_ms()) for b in ckpt.bans)
        banned = self.engine.restore_bans(entries, trio.current_time())
        if banned:
            log.info("bans kept over the restart: %d peers", len(banned))
        self.learner.set_params(ckpt.own)
        self.rounds.round = ckpt.round
        self.store.note_restart(ckpt, self.engine.public_digest)
        log.info("resumed from checkpoint round=%d seq=%d", ckpt.round, ckpt.seq)

    async def _block_restored_bans(self, t: Transport) -> None:
        """Block the peers evicted at start: only bans a checkpoint kept (:meth:`_restore`) can be."""
        if not hasattr(t, "block"):
            return
        for peer in sorted(self.engine.evicted_peers()):
            try:
                await t.block(peer)
            except TransportError as exc:  # (an id this transport cannot parse: nothing to block)
                log.warning("cannot block banned peer=%s after the restart: %s", peer, exc)

    # ---------------------------------------------------------------------------------- network

    def neighbours(self) -> list[str]:
        """Connected peers that may be learning neighbours: every connection but a bootstrap registry's (it
        is dialled to register and discover, never learns, and must not satisfy ``min_neighbours``)."""
        return self.discovery.neighbours()

    async def discover(self) -> int:
        """Dial known peers of the network (the registries' and the peer cache's, in a random order) up to
        ``learning_degree`` learning links; returns how many were added."""
        return await self.discovery.discover()

    async def connect(self, addr: str) -> str:
        """Dial ``addr`` (a multiaddr with ``/p2p/<id>``); the peer counts as chosen (``mix_scope``)."""
        peer_id = await self.transport.connect(addr)
        self.choose((peer_id,))
        return peer_id

    def choose(self, peer_ids: Iterable[str]) -> None:
        """Count ``peer_ids`` as links this peer chose (``mix_scope = "chosen"``) whichever end dials them:
        a host's or a simulation's topology, whose links only one end dials. A chosen peer whose link drops
        stays chosen (it may dial back); past ``MAX_CHOSEN`` only the connected and static ones are kept."""
        ids = tuple(peer_ids)
        self.chosen.update(ids)
        self.has_chosen = self.has_chosen or bool(ids)
        if len(self.chosen) > MAX_CHOSEN:
            keep = set(self.transport.connected_peers()) if self._transport is not None else set()
            self.chosen = {p for p in self.chosen if p in keep or p in self._static_ids} | set(ids)

    async def _connect_static(self) -> None:
        """Dial the static peers that are not connected and ours to dial now (the lower peer id of a pair at
        once, the higher after a grace: p2pfl.protocol.dialling), all at once: a peer not up yet costs the
        swarm's retries (~0.7 s), and one after the other 8 of them held a simulation worker's start for
        5.8 s."""
        connected = set(self.transport.connected_peers())
        by_id = {addr: addr_peer_id(addr) for addr in self.config.static_peers}  # .../p2p/ID
        since, now = self._unconnected_since, trio.current_time()
        due = set(static_dials(self.peer_id, by_id.values(), connected, since, now=now))

        async def dial(addr: str) -> None:
            try:
                await self.transport.connect(addr)
            except TransportError as exc:
                log.info("static peer not reachable yet addr=%s reason=%s", addr, exc)

        async with trio.open_nursery() as nursery:
            for addr, pid in by_id.items():
                if pid in due:
                    nursery.start_soon(dial, addr)

    def _needs_housekeeping(self) -> bool:
        """Whether the periodic housekeeping has anything to do: static peers to re-dial, a status line to
        log, or a ``status.json`` to refresh. Without any of them its wake-ups only cost CPU (10,000 peers in
        one memory-engine process: one wake-up per peer per ``reconnect_interval_s``)."""
        config = self.config
        return bool(config.static_peers or config.status_interval_s or config.state_dir is not None)

    async def _housekeeping(self) -> None:
        period = min(self.config.reconnect_interval_s or 5.0, self.config.status_interval_s or 5.0)
        wait = min(period, DIAL_GRACE_S)  # the higher id of a static pair dials as soon as its grace is over
        while True:
            await trio.sleep(wait)
            wait = period
            await self._connect_static()  # re-dials the static peers that are not connected
            if (
                self.config.status_interval_s
                and trio.current_time() - self._last_status >= self.config.status_interval_s
            ):
                self._last_status = trio.current_time()
                log.info("status %s", format_status(self.status()))
            await self.write_status(unless_fresh=period)

    # ------------------------------------------------------------------------------------ rounds

    async def run(
        self, rounds: int | None = None, *, until: Callable[[], bool] | None = None
    ) -> list[RoundReport]:
        """Run rounds until ``rounds`` more are done, ``until()`` is true, or :meth:`stop` is called."""
        return await self.rounds.run(rounds, until)

    async def step(self) -> RoundReport:
        """One round: train, publish, wait for the neighbours' versions of this round (at most
        ``max_round_wait_s``; not for nobody when ``min_neighbours = 0``), score, mix, persist. With
        ``wait_before_mix = false`` (the old order) a step publishes after its mix and never waits:
        :meth:`run` waits before each round but the first (p2pfl.protocol.pacing, "Where the wait sits")."""
        return await self.rounds.step()

    async def write_status(self, unless_fresh: float | None = None) -> None:
        """``state_dir/status.json``: the status line as JSON, for operators and scripts (atomic).

        ``unless_fresh`` (the housekeeping's period): no write when the file already says this, or was
        written (by a round) within that many seconds: the file is never older than the period either way,
        and each write is a thread hand-off, a rename and a directory fsync (1.7 % of a 32-peer benchmark
        worker's CPU, docs/benchmarks.md "32 peers, second pass")."""
        if self.config.state_dir is None:
            return
        data = json.dumps(self.status(), indent=2, sort_keys=True).encode()  # on the loop: consistent
        now = trio.current_time()
        last, at = self._status_written
        if unless_fresh is not None and (data == last or now - at < unless_fresh):
            return
        await self._run_sync(self.store.write_status, data)
        self._status_written = (data, now)

    # ------------------------------------------------------------------------------------ status

    @property
    def round(self) -> int:
        """Rounds done (a resumed peer counts on from its checkpoint)."""
        return self.rounds.round

    @property
    def reports(self) -> list[RoundReport]:
        return self.rounds.reports

    @property
    def last_eval(self) -> EvalResult | None:
        """The evaluation of the model the last round kept."""
        return self.rounds.last_eval

    @property
    def local_divergences(self) -> int:
        return self.rounds.local_divergences

    @property
    def mixes_refused(self) -> int:
        return self.rounds.mixes_refused

    @property
    def val_evaluations(self) -> int:
        """How many neighbour models have been evaluated for scoring (one per new version)."""
        return self.rounds.val_evaluations

    def params(self) -> Params:
        """The current own (mixed) model."""
        return self.engine.own_params()

    def quality_snapshot(self) -> Mapping[str, float]:
        """The newest own version's quality and deltas (``val_accuracy``, ``val_loss``, ``val_f1``,
        ``val_auc``, ``delta_auc``, ``delta_f1``, ``serving_seq``, ``candidate_seq``, ``candidate_delta_*``;
        a key is absent while undefined). Thread-safe; see p2pfl.rollout.runtime."""
        return self.rollout.quality_snapshot()

    def status(self) -> dict[str, Any]:
        """Round, version, validation, traffic, rejections, quality and rollout (p2pfl.peer_status)."""
        return peer_status(self)


async def _unstick(nursery: trio.Nursery, transport: Transport | None) -> None:
    """Give the cancelled tasks ``EXIT_GRACE_S`` to finish, then abort the transport's connections.

    A task may sit in a libp2p cleanup that is shielded from cancellation and waits on a deadlocked
    connection (``Libp2pTransport.abort`` explains it); without this the peer would never exit."""
    with trio.CancelScope(shield=True):  # runs even when the peer is left by cancellation
        with trio.move_on_after(EXIT_GRACE_S):
            while nursery.child_tasks:
                await trio.sleep(0.05)
        abort = getattr(transport, "abort", None)
        if nursery.child_tasks and abort is not None:
            names = sorted({t.name.rpartition(".")[2] for t in nursery.child_tasks})
            log.warning(
                "%d task(s) still running %.0f s after stop (%s): aborting the connections",
                len(nursery.child_tasks),
                EXIT_GRACE_S,
                ", ".join(names),
            )
            abort()
