"""The peer: protocol engine + transport + learner + durable state, on trio.

``Peer`` is the one place where the network, the clock, threads and the disk meet the pure engine. Use it as
an async context manager from trio code::

    async with p2pfl.Peer(config, learner) as peer:
        await peer.run(rounds=20)

or, from any other program (threads, asyncio), through :class:`PeerHandle`, which runs the same ``Peer`` in
its own trio thread and exposes thread-safe ``start``/``stop``/``status``/``params``.

Each round: wait for the neighbours' new versions (``protocol.pacing``), start from the own (mixed) model,
train ``local_steps`` in a worker thread (the trio loop keeps serving the network meanwhile), evaluate the new
replica versions on the own validation split (``ValLossCache``), let the engine publish the trained model and
mix it with one snapshot of the replicas, let the own-data guards decide what the round keeps
(``protocol.guards``), write the checkpoint and the version log (``PeerStore``; before broadcasting: a crash
can never reuse a version number), then broadcast and evict (``Exchange``).

The policies are pure and live in ``p2pfl.protocol`` (pacing, guards, join, logs); this module asks them
with trio's clock, so a test's MockClock drives every wait. Around the class: ``peer_exchange`` (the
network side), ``peer_discovery`` (bootstrap registries), ``peer_store`` (disk), ``peer_handle`` (non-trio
host programs).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import trio

from p2pfl.config.schema import PeerConfig as PeerConfig  # noqa: PLC0414 - re-exported from its old home
from p2pfl.errors import P2PFLError, TransportError
from p2pfl.identity import Identity
from p2pfl.learner import EvalResult, Learner, TrainResult
from p2pfl.peer_discovery import PeerDiscovery
from p2pfl.peer_exchange import Exchange
from p2pfl.peer_handle import PeerHandle as PeerHandle  # noqa: PLC0414 (re-export)
from p2pfl.peer_store import PeerStore, finite_or_none, format_status, now_ms
from p2pfl.protocol import (
    DELTA_PROTOCOL,
    SNAPSHOT_PROTOCOL,
    GossipEngine,
    Replica,
    RoundOutcome,
    Start,
    ValLossCache,
)
from p2pfl.protocol.guards import GuardConfig, RollbackGuard, RoundDecision, check_trained, decide_round
from p2pfl.protocol.join import JoinPlan
from p2pfl.protocol.pacing import (
    ConnectionClock,
    NeighbourView,
    PacingConfig,
    RoundPacer,
    StartGate,
    next_round_at,
    unsubscribed,
)
from p2pfl.transport.base import Transport
from p2pfl.wire import Meta

if TYPE_CHECKING:
    # trio's own TaskStatus is shadowed by the trio-typing stubs that libp2p pulls in.
    pass

log = logging.getLogger("p2pfl.peer")

#: How long a connected peer may take to subscribe to our announcements before it is taken for a non-learner
#: (a bootstrap registry never subscribes). Gossipsub carries a subscription in its first RPC; the topic sync
#: runs every second.
SUBSCRIBE_GRACE_S = 3.0

#: How long a stopping peer waits for its cancelled tasks before it aborts the transport's connections.
EXIT_GRACE_S = 3.0
Params = dict[str, npt.NDArray[np.float32]]
TransportFactory = Callable[[Identity], Any]  # returns an async context manager yielding a Transport
#: how a peer runs blocking work (``trio.to_thread.run_sync`` unless a test runs it inline)
RunSync = Callable[..., Awaitable[Any]]


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
        run_sync: RunSync | None = None,
    ) -> None:
        self.config = config
        #: runs blocking work (training, evaluation, disk) off the event loop; tests may run it inline
        self._run_sync: RunSync = run_sync or trio.to_thread.run_sync
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
        self.store = PeerStore(config.state_dir, self.identity, config.network_id)
        self._guard_config = guard_config(config)
        self._guard = (
            RollbackGuard(margin=config.rollback_margin, warmup=config.rollback_warmup)
            if config.rollback_margin
            else None
        )
        self._round_lock = trio.Lock()
        self._stopped = trio.Event()
        self._last_status = -math.inf
        self._replica_updated = trio.Event()
        self._last_mix = -math.inf
        self._pacing = pacing_config(config)
        self._pacer = RoundPacer(self._pacing)
        #: connected neighbour -> when we first saw it connected (trio clock)
        self._connections = ConnectionClock()
        self.local_divergences = 0
        self.mixes_refused = 0
        #: each candidate replica's loss on the own validation split, by its version (see _step)
        self._val_cache = ValLossCache()
        #: how many neighbour models have been evaluated for scoring (one per new version)
        self.val_evaluations = 0
        self._started = False
        self.exchange = Exchange(
            self.engine,
            lambda: self.transport,
            self._running_nursery,
            self._note_update,
            max_model_bytes=config.max_model_bytes,
            request_timeout_s=config.request_timeout_s,
        )
        self.discovery = PeerDiscovery(
            config,
            self.identity,
            lambda: self.transport,
            may_dial=lambda pid: not self.engine.is_evicted(pid) and self._peer_allowed(pid),
            unexpected=self.exchange.unexpected,
        )

    # --------------------------------------------------------------------------------- lifecycle

    def _note_update(self) -> None:
        self._replica_updated.set()  # the event is replaced for each wait: look it up now

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
            t: Transport = await self._stack.enter_async_context(self._transport_factory(self.identity))
            self._transport = t
            t.set_gossip_validator(self.exchange.validate_gossip)
            t.set_gossip_handler(self.exchange.on_gossip)
            t.set_request_handler(DELTA_PROTOCOL, self.exchange.serve_delta)
            t.set_request_handler(SNAPSHOT_PROTOCOL, self.exchange.serve_snapshot)
            if self.config.allow is not None and hasattr(t, "set_peer_filter"):
                t.set_peer_filter(self._peer_allowed)
            self._nursery = await self._stack.enter_async_context(trio.open_nursery())
            await self._connect_static()
            if self.config.bootstrap:
                await self.discovery.start(self._nursery)
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
        """One last line: INFO for a clean stop; ERROR for an expected failure (a :class:`P2PFLError` such as
        a full disk); a crash (a bug, or an error the host app raised inside the ``async with``) is CRITICAL
        with its type, so neither reads like a clean stop."""
        where = (
            f"peer={self.peer_id} round={self.round} seq={self.engine.seq} persisted_seq={self.persisted_seq}"
        )
        if error is None or _only_cancelled(error):
            log.info("peer stopped %s", where)
            return
        leaf = _leaf(error)
        if isinstance(leaf, P2PFLError):  # expected (disk full, bad state): no bug, but no clean stop
            log.error("peer failed %s error=%s: %s", where, type(leaf).__name__, leaf)
            return
        log.critical("peer crashed %s error=%s: %s", where, type(leaf).__name__, leaf)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current round (safe from signal handlers in trio)."""
        self._stopped.set()

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
        if ckpt is None:
            return
        self.engine.restore(ckpt.own, ckpt.public, ckpt.seq)
        self.learner.set_params(ckpt.own)
        self.round = ckpt.round
        self.store.note_restart(ckpt, self.engine.public_digest)
        log.info("resumed from checkpoint round=%d seq=%d", ckpt.round, ckpt.seq)

    # ---------------------------------------------------------------------------------- network

    def _peer_allowed(self, peer_id: str) -> bool:
        return self.config.allow is None or peer_id in self.config.allow

    def neighbours(self) -> list[str]:
        """Connected peers that may be learning neighbours: every connection but a bootstrap registry's (it
        is dialled to register and discover, never learns, and must not satisfy ``min_neighbours``)."""
        return self.discovery.neighbours()

    async def discover(self) -> int:
        """Dial known peers of the network (registries first, then the peer cache); returns how many new."""
        return await self.discovery.discover()

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

    async def _join(self, adopt: bool) -> None:
        """Fetch snapshots from the connected peers and start from their median (``adopt``: a fresh peer) or
        from the median of theirs and its own (resuming from a checkpoint); see p2pfl.protocol.join."""
        plan = JoinPlan(
            quorum=self.config.join_quorum,
            timeout_s=self.config.join_timeout_s,
            request_timeout_s=self.config.request_timeout_s,
            adopt=adopt,
            started_at=trio.current_time(),
        )
        snaps = await self.exchange.fetch_snapshots(plan, self.neighbours)
        if snaps:
            self._join_from(plan, snaps)

    def _join_from(self, plan: JoinPlan, snaps: Mapping[str, bytes]) -> None:
        try:
            used = self.engine.join_from_snapshots(snaps, trio.current_time(), resume=not plan.adopt)
        except Exception as exc:  # each snapshot is checked on its own (never raises): this is a bug
            self.exchange.unexpected(None, "join", exc)
            return
        finally:
            self.exchange.log_faults()
            self.exchange.log_rejections()
        if plan.apply(used):
            self.learner.set_params(self.engine.own_params())
            log.info("%s from the median of %d snapshots", "joined" if plan.adopt else "resumed", used)

    async def _housekeeping(self) -> None:
        while True:
            await trio.sleep(
                min(self.config.reconnect_interval_s or 5.0, self.config.status_interval_s or 5.0)
            )
            await self._connect_static()  # re-dials the static peers that are not connected
            if (
                self.config.status_interval_s
                and trio.current_time() - self._last_status >= self.config.status_interval_s
            ):
                self._last_status = trio.current_time()
                log.info("status %s", format_status(self.status()))
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
            next_at = next_round_at(started, self._pacing)
            if next_at > trio.current_time():
                with trio.move_on_at(next_at):
                    await self._stopped.wait()
        return done

    def _views(self, now: float) -> list[NeighbourView]:
        """What the pacing sees of the connected neighbours at ``now``."""
        connected = self.neighbours()
        first_seen = self._connections.observe(connected, now)
        listeners = set(self.transport.listeners())
        views = []
        for p in connected:
            rep = self.engine.replicas.get(p)
            last = None if rep is None else rep.updated_at
            views.append(NeighbourView(p, first_seen[p], p in listeners, last, self.engine.is_evicted(p)))
        return views

    async def _await_neighbours(self) -> None:
        """Before the first round: neighbours, then their subscriptions (see p2pfl.protocol.pacing)."""
        gate = StartGate(self._pacing, trio.current_time())
        while not self._stopped.is_set():
            now = trio.current_time()
            views = self._views(now)
            decision = gate.decide(now, len(views), len(unsubscribed(now, views, self._pacing)))
            if isinstance(decision, Start):
                if decision.reason == "timeout":
                    log.warning(
                        "starting with %d of min_neighbours=%d neighbours after %.0f s",
                        len(views),
                        self.config.min_neighbours,
                        self.config.start_timeout_s,
                    )
                return
            await trio.sleep_until(decision.until)

    async def _wait_for_neighbours(self) -> None:
        """Before a round: until enough neighbours sent a new version (see p2pfl.protocol.pacing)."""
        self._pacer.begin_wait(trio.current_time(), self._last_mix)
        while True:
            now = trio.current_time()
            decision = self._pacer.decide(now, self._views(now), stopped=self._stopped.is_set())
            if isinstance(decision, Start):
                return
            self._replica_updated = trio.Event()
            with trio.move_on_at(decision.until):  # or earlier, when a replica is updated
                await self._replica_updated.wait()

    async def step(self) -> RoundReport:
        """One round: train, score, mix, persist, publish."""
        async with self._round_lock:
            return await self._step()

    async def _step(self) -> RoundReport:
        t0 = trio.current_time()
        await self.exchange.execute(self.engine.readmissions(t0))
        train, trained = await self._train()
        # one snapshot of the candidates (their versions as of now) is evaluated, scored and mixed
        candidates = [replace(r) for r in self.engine.mixing_candidates(trio.current_time())]
        trained_eval, val_losses, own_val = await self._evaluate(candidates, trained)
        self.round += 1
        outcome: RoundOutcome = self.engine.finish_round(
            trained,
            trio.current_time(),
            meta=Meta(samples=train.samples, loss=finite_or_none(train.loss), round=self.round),
            timestamp_ms=now_ms(),
            val_losses=val_losses,
            own_val_loss=own_val,
            candidates=candidates,
        )
        self._last_mix = trio.current_time()
        decision = await self._guard_round(trained, trained_eval)
        ev = decision.evaluation
        metrics = {"train_loss": train.loss, "val_loss": ev.loss}
        if ev.accuracy is not None:
            metrics["val_accuracy"] = ev.accuracy
        await self._run_sync(self.store.persist, self.engine, self.round, outcome, metrics, decision.notes)
        await self.exchange.execute(outcome.actions)
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
            rolled_back=decision.rolled_back,
            duration_s=trio.current_time() - t0,
            mix_refused=decision.mix_refused,
        )
        self.reports.append(report)
        return report

    async def _train(self) -> tuple[TrainResult, Params]:
        """Local training from the own model; a diverged step is discarded (the round keeps the start)."""
        start = self.engine.own_params()
        self.learner.set_params(start)
        train = await self._run_sync(self.learner.train, self.config.local_steps)
        trained = self.learner.get_params()
        if not check_trained(trained):
            # a diverged local step must never reach the network (the wire would refuse it anyway)
            self.local_divergences += 1
            log.error("local training diverged (non-finite parameters): this round's update is discarded")
            trained = start
            self.learner.set_params(start)
        return train, trained

    async def _evaluate(
        self, candidates: Sequence[Replica], trained: Params
    ) -> tuple[EvalResult | None, dict[str, float] | None, float | None]:
        """(the trained model's evaluation, the candidates' validation losses, the trained model's loss):
        what scoring by validation loss and the mix guard need, evaluated in a worker thread."""
        learner = self.learner
        if self.config.scoring_enabled and self.config.val_scoring and candidates:
            jobs = self._val_cache.plan(candidates)  # on the loop: versions and read-only copies
            layout = self.engine.layout

            def evaluate_all() -> tuple[list[float], EvalResult]:
                # the learner gets a writable copy of each read-only job (torch warns on read-only arrays)
                losses = [learner.evaluate(layout.unflatten(j.vec.copy())).loss for j in jobs]
                return losses, learner.evaluate(trained)

            fresh_losses, evaluated = await self._run_sync(evaluate_all)
            self._val_cache.record(jobs, fresh_losses)
            self.val_evaluations += len(jobs)
            if math.isfinite(evaluated.loss):
                return evaluated, self._val_cache.losses(candidates), evaluated.loss
            return evaluated, None, None
        if self.config.mix_guard_margin is not None and candidates:
            return await self._run_sync(learner.evaluate, trained), None, None
        return None, None, None

    async def _guard_round(
        self, trained: Params, trained_eval: EvalResult | None
    ) -> RoundDecision[EvalResult]:
        """Evaluate the mix, then let the guards decide what the round keeps (p2pfl.protocol.guards)."""
        mixed = self.engine.own_params()
        self.learner.set_params(mixed)
        mixed_eval = await self._run_sync(self.learner.evaluate)
        decision = decide_round(
            self.round, trained_eval, mixed_eval, trained, mixed, cfg=self._guard_config, rollback=self._guard
        )
        if decision.params_source != "mixed":
            self.engine.set_own(decision.params)
            self.learner.set_params(decision.params)
        for line in decision.logs:
            log.warning("%s", line)
        self.mixes_refused += decision.mix_refused
        self.last_eval = decision.evaluation
        return decision

    async def write_status(self) -> None:
        """``state_dir/status.json``: the status line as JSON, for operators and scripts (atomic)."""
        if self.config.state_dir is not None:
            data = json.dumps(self.status(), indent=2, sort_keys=True).encode()  # on the loop: consistent
            await self._run_sync(self.store.write_status, data)

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


def pacing_config(config: PeerConfig) -> PacingConfig:
    """The round pacing's knobs of ``config``."""
    return PacingConfig(
        wait_fraction=config.wait_fraction,
        max_round_wait_s=config.max_round_wait_s,
        min_neighbours=config.min_neighbours,
        start_timeout_s=config.start_timeout_s,
        round_interval_s=config.round_interval_s,
        subscribe_grace_s=SUBSCRIBE_GRACE_S,
    )


def guard_config(config: PeerConfig) -> GuardConfig:
    """The own-data guards' knobs of ``config``."""
    return GuardConfig(
        mix_guard_margin=config.mix_guard_margin,
        mix_guard_warmup=config.mix_guard_warmup,
        rollback_margin=config.rollback_margin,
        rollback_warmup=config.rollback_warmup,
    )


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
