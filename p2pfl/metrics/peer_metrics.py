"""One peer's Prometheus metrics: its own registry, the scrape-time collector, a few direct observations
(round, fetch, train and evaluate times; evictions and readmissions), and the HTTP endpoint.

Every peer has a :class:`CollectorRegistry` of its own (never the process-global one), so several peers in
one process (tests, simulations, an application running two) do not collide. Nothing here can stop the
peer: observers swallow and count their own failures, the collector ends a failed scrape with a count, and
the HTTP server runs in daemon threads of ``prometheus_client``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from p2pfl.errors import P2PFLError, TransportError
from p2pfl.learner import EvalResult, Learner, TrainResult
from p2pfl.metrics.collector import SnapshotCollector
from p2pfl.metrics.listen import parse_listen
from p2pfl.metrics.snapshot import Snapshot, take_snapshot
from p2pfl.protocol.actions import DELTA_PROTOCOL, SNAPSHOT_PROTOCOL, Action, Evict, Readmit

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from p2pfl.peer import Peer, RoundReport

log = logging.getLogger("p2pfl.metrics")

ROUND_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
FETCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WORK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_FETCH_KINDS = {DELTA_PROTOCOL: "model_payload", SNAPSHOT_PROTOCOL: "snapshot"}
#: how long a scrape waits for the peer's loop to take a fresh snapshot before it serves the previous one
FRESH_WAIT_S = 0.010
#: ... unless there is none yet
STARTUP_WAIT_S = 5.0


class PeerMetrics:
    """The metrics of one :class:`~p2pfl.peer.Peer` (``peer.metrics``; None when metrics are off).

    ``registry`` holds every p2pfl metric of the peer: serve it yourself (``prometheus_client``'s
    ``generate_latest(peer.metrics.registry)``) or let :meth:`serve` do it. Other parts of p2pfl (and an
    embedding application) may register their own collectors in it."""

    def __init__(self, peer: Peer, registry: CollectorRegistry | None = None) -> None:
        self._peer = peer
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self._token: trio.lowlevel.TrioToken | None = None
        self._server: WSGIServer | None = None
        #: the latest snapshot taken (served when the loop is too busy for a fresh one)
        self._last: Snapshot | None = None
        self.collector = SnapshotCollector(self._snapshot)
        self.registry.register(self.collector)
        r = self.registry
        self.rounds = Counter("p2pfl_rounds", "Rounds completed by this process.", registry=r)
        self.round_seconds = Histogram(
            "p2pfl_round_duration_seconds", "Time of a round: train, evaluate, mix, persist, publish.",
            buckets=ROUND_BUCKETS, registry=r,
        )  # fmt: skip
        self.evictions = Counter("p2pfl_evictions", "Neighbours evicted (each eviction once).", registry=r)
        self.readmissions = Counter(
            "p2pfl_readmissions", "Evicted neighbours readmitted on probation.", registry=r
        )
        self.snapshot_fetches = Counter(
            "p2pfl_snapshot_fetches", "Snapshot requests sent, by outcome.", ["outcome"], registry=r
        )
        self.fetch_seconds = Histogram(
            "p2pfl_fetch_duration_seconds", "Time of a payload or snapshot fetch, failed ones included.",
            ["kind"], buckets=FETCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.train_seconds = Histogram(
            "p2pfl_train_duration_seconds",
            "Time of one local training call.",
            buckets=WORK_BUCKETS,
            registry=r,
        )
        self.evaluate_seconds = Histogram(
            "p2pfl_evaluate_duration_seconds",
            "Time of one evaluation on the validation split (own or a neighbour's model).",
            buckets=WORK_BUCKETS,
            registry=r,
        )
        for outcome in ("ok", "failed"):  # present from the first scrape, at 0
            self.snapshot_fetches.labels(outcome)
        for kind in _FETCH_KINDS.values():
            self.fetch_seconds.labels(kind)

    # ---------------------------------------------------------------------------------- hooks
    def set_privacy_budget_source(self, source: Callable[[], float | None] | None) -> None:
        """Export ``p2pfl_privacy_epsilon_spent`` from ``source()`` (epsilon spent, or None while unknown);
        the gauge exists only while a source is set. For a learner with differential privacy."""
        self.collector.privacy_budget = source

    def on_round(self, report: RoundReport) -> None:
        """A round ended (the round loop's ``on_round``)."""
        self._guarded(self._on_round, report)

    def _on_round(self, report: RoundReport) -> None:
        self.rounds.inc()
        self.round_seconds.observe(report.duration_s)

    def on_action(self, action: Action) -> None:
        """The exchange carries out ``action`` (its observer): evictions and readmissions are counted."""
        self._guarded(self._on_action, action)

    def _on_action(self, action: Action) -> None:
        if isinstance(action, Evict):
            self.evictions.inc()
        elif isinstance(action, Readmit):
            self.readmissions.inc()

    def on_request(self, protocol: str, seconds: float, ok: bool) -> None:
        """An outbound request ended (``TransportStats.request_observer``)."""
        kind = _FETCH_KINDS.get(protocol)
        if kind is None:
            return
        self.fetch_seconds.labels(kind).observe(seconds)
        if protocol == SNAPSHOT_PROTOCOL:
            self.snapshot_fetches.labels("ok" if ok else "failed").inc()

    def timed(self, learner: Learner) -> Learner:
        """``learner`` with its ``train`` and ``evaluate`` calls timed (everything else passes through)."""
        return _TimedLearner(learner, self)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # metrics must never stop a round
            self.collector.errors += 1
            log.debug("metrics: an observer failed: %s: %s", type(exc).__name__, exc)

    # -------------------------------------------------------------------------------- snapshot
    def bind(self) -> None:
        """Remember the running trio loop (call on it, when the peer starts), and watch its transport."""
        self._token = trio.lowlevel.current_trio_token()
        transport = self._peer._transport
        if transport is not None:
            transport.stats.request_observer = self.on_request
        self._guarded(self._take, _Pending())

    def _snapshot(self) -> Snapshot:
        """A fresh snapshot if the peer's loop takes one within ``FRESH_WAIT_S``, else the previous one.

        The loop may be busy for a while (a large model's aggregation runs on it); a scrape then answers at
        once with the snapshot the previous scrape asked for, and this one's lands for the next (counted in
        ``p2pfl_metrics_stale_scrapes_total``). ``run_sync_soon`` never blocks the scraping thread."""
        token = self._token
        if token is None:
            raise P2PFLError("the peer is not running")
        try:
            if trio.lowlevel.current_trio_token() is token:  # scraped from the peer's own loop
                snap = self._last = take_snapshot(self._peer)
                return snap
        except RuntimeError:
            pass  # not in a trio thread: the usual case (the HTTP server's thread)
        pending = _Pending()
        token.run_sync_soon(self._take, pending)  # RunFinishedError once the peer is gone
        if pending.done.wait(FRESH_WAIT_S) or (self._last is None and pending.done.wait(STARTUP_WAIT_S)):
            if pending.error is not None:
                raise pending.error
            assert pending.value is not None
            return pending.value
        if self._last is None:
            raise P2PFLError(f"the peer's loop took no snapshot within {STARTUP_WAIT_S} s")
        self.collector.stale += 1
        return self._last

    def _take(self, pending: _Pending) -> None:
        """On the peer's loop: a snapshot, kept for a scrape that cannot wait for the next one. Never raises
        (an exception in a ``run_sync_soon`` callback would crash the peer's trio run)."""
        try:
            pending.value = self._last = take_snapshot(self._peer)
        except BaseException as exc:
            pending.error = exc
        finally:
            pending.done.set()

    # --------------------------------------------------------------------------------- serving
    def serve(self, listen: str) -> tuple[str, int]:
        """Serve ``/metrics`` on ``listen`` (``HOST:PORT``) from daemon threads; returns the bound address.

        A bad address is a ``ConfigError``; a port in use (or another refusal of the OS) a
        ``TransportError`` caused by the ``OSError`` (exit 3 from the CLI)."""
        host, port = parse_listen(listen)
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise TransportError(f"[metrics] listen {listen}: cannot listen: {exc.strerror or exc}") from exc
        self._server = server
        bound = server.server_address
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        """Stop serving (blocks up to the server's poll interval, 0.5 s: call it from a worker thread)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread, shielded: the port is released even if the peer is cancelled."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.close)

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the endpoint listens (``None``: not serving)."""
        if self._server is None:
            return None
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])


class _Pending:
    """A snapshot asked of the peer's loop by a scraping thread."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Snapshot | None = None
        self.error: BaseException | None = None


class _TimedLearner:
    """A learner whose ``train``/``evaluate`` durations go to the peer's histograms; other attributes are
    the wrapped learner's."""

    def __init__(self, inner: Learner, metrics: PeerMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def get_params(self) -> Any:
        return self._inner.get_params()

    def set_params(self, params: Mapping[str, Any]) -> None:
        self._inner.set_params(params)

    def train(self, steps: int) -> TrainResult:
        started = time.perf_counter()
        result = self._inner.train(steps)
        self._metrics._guarded(self._metrics.train_seconds.observe, time.perf_counter() - started)
        return result

    def evaluate(self, params: Mapping[str, Any] | None = None) -> EvalResult:
        started = time.perf_counter()
        result = self._inner.evaluate(params)
        self._metrics._guarded(self._metrics.evaluate_seconds.observe, time.perf_counter() - started)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
