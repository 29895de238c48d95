"""The scrape-time half of a peer's metrics: metric families built from a :class:`Snapshot`.

Counters the peer keeps anyway (bytes, rejections, accepted envelopes) are read when Prometheus asks, not
mirrored on every event: nothing is added to the peer's hot paths, and a failure here ends one scrape
(counted in ``p2pfl_metrics_errors_total``), never the peer.

Per-neighbour series are capped: the first :data:`NEIGHBOUR_LABEL_CAP` peers seen get a ``peer`` label of
their own for the life of the process (sticky, so a series never changes meaning); later ones share the
``peer="other"`` series of a counter and have no gauge series. A scrape's size so stays bounded however
many peers come and go (Sybils included).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from p2pfl.discovery.codec import PROTOCOL_ID as DISCOVERY_PROTOCOL
from p2pfl.metrics.snapshot import Snapshot
from p2pfl.protocol.actions import DELTA_PROTOCOL, SNAPSHOT_PROTOCOL
from p2pfl.transport.base import GOSSIP

log = logging.getLogger("p2pfl.metrics")

#: neighbours with a ``peer`` label of their own (per-neighbour families); the rest are ``other``
NEIGHBOUR_LABEL_CAP: Final = 64
#: distinct rejection reasons with a label of their own (reasons are code-defined slugs: a safety net)
REASON_LABEL_CAP: Final = 64
OTHER: Final = "other"
#: the ``kind`` label of the byte counters; ``libp2p_control`` is every wire byte that is none of the others
#: (handshakes, yamux framing, gossipsub control and relayed messages, identify, ping)
BYTE_KINDS: Final = ("model_payload", "gossip", "libp2p_control", "discovery")
#: the ``state`` label of ``p2pfl_neighbours``: ``connected`` counts them all; each of the others counts
#: the connected neighbours the scorer holds in that status (``established``: active, earned full weight,
#: model held; ``young``: a new identity still earning its influence, mixed with a capped weight;
#: ``probation``: readmitted after an eviction, scored but not mixed; ``excluded``: reputation too low)
NEIGHBOUR_STATES: Final = ("connected", "established", "young", "probation", "excluded")
#: the ``phase`` label of ``p2pfl_rollout_candidate_phase``
ROLLOUT_PHASES: Final = ("shadow", "canary")
#: ``Peer.quality_snapshot()`` keys exported as gauges (absent while undefined): key -> (name, help)
QUALITY_GAUGES: Final = {
    "val_f1": ("p2pfl_validation_f1", "Own newest version's macro F1 on the validation split (0..1)."),
    "val_auc": (
        "p2pfl_validation_auc",
        "Own newest version's macro one-vs-rest ROC AUC on validation (0..1).",
    ),
    "delta_auc": (
        "p2pfl_quality_delta_auc",
        "Own newest version's AUC minus the base version's (+: better).",
    ),
    "delta_f1": ("p2pfl_quality_delta_f1", "Own newest version's F1 minus the base version's (+: better)."),
    "base_seq": ("p2pfl_quality_base_seq", "The version the deltas compare with (rollout on)."),
    "serving_seq": ("p2pfl_rollout_serving_seq", "The version served to the host application."),
    "candidate_seq": ("p2pfl_rollout_candidate_seq", "The version under test in shadow or canary."),
    "candidate_delta_auc": (
        "p2pfl_rollout_candidate_delta_auc",
        "The candidate's AUC minus the serving version's, on validation data plus feedback.",
    ),
    "candidate_delta_f1": (
        "p2pfl_rollout_candidate_delta_f1",
        "The candidate's F1 minus the serving version's, on validation data plus feedback.",
    ),
}
#: ``peer.rollout.status()`` counts exported as counters: key -> (name without ``_total``, help)
ROLLOUT_COUNTERS: Final = {
    "promotions": ("p2pfl_rollout_promotions", "Candidates promoted to serving (the first version is not)."),
    "demotions": ("p2pfl_rollout_demotions", "Candidates demoted in shadow or canary."),
    "rollbacks": ("p2pfl_rollout_rollbacks", "Serving versions rolled back after their promotion."),
}


def byte_kind(key: str) -> str:
    """The ``kind`` of a ``TransportStats.sent_by`` key (``gossip`` or a request protocol id)."""
    if key == GOSSIP:
        return "gossip"
    if key in (DELTA_PROTOCOL, SNAPSHOT_PROTOCOL):
        return "model_payload"
    if key == DISCOVERY_PROTOCOL:
        return "discovery"
    return OTHER


class LabelCap:
    """Sticky label values: the first ``cap`` values keep their own label for good, later ones: ``other``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._own: set[str] = set()

    def label(self, value: str) -> str:
        if value in self._own:
            return value
        if len(self._own) < self.cap and value != OTHER:
            self._own.add(value)
            return value
        return OTHER

    def owns(self, value: str) -> bool:
        return value in self._own


class SnapshotCollector(Collector):
    """A ``prometheus_client`` collector over a peer's :class:`Snapshot` (see the module docstring).

    ``snapshot`` returns the peer's counters now, or raises (the peer is stopping, or a bug): then the scrape
    carries only ``p2pfl_metrics_errors_total``. ``privacy_budget`` (when set) returns the privacy budget
    spent (epsilon) or None; its gauge exists only while one is set."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot
        self.privacy_budget: Callable[[], float | None] | None = None
        self.errors = 0
        #: scrapes answered with the previous snapshot (the peer's loop was busy)
        self.stale = 0
        self._peers = LabelCap(NEIGHBOUR_LABEL_CAP)
        self._rejections = Tally()
        self._reasons = LabelCap(REASON_LABEL_CAP)
        self._drop_reasons = LabelCap(REASON_LABEL_CAP)
        #: high-water marks of the derived control bytes (a counter never goes down)
        self._control = {"sent": 0, "received": 0}

    def describe(self) -> Iterable[Metric]:
        return []  # not described up front: collect() then is not run at registration

    def collect(self) -> Iterable[Metric]:
        try:
            families = list(self._families(self._snapshot()))
        except Exception as exc:
            self.errors += 1
            log.debug("metrics: a scrape failed: %s: %s", type(exc).__name__, exc)
            families = []
        errors = CounterMetricFamily(
            "p2pfl_metrics_errors", "Scrapes or metric sources that failed (the peer is unaffected)."
        )
        errors.add_metric([], self.errors)
        stale = CounterMetricFamily(
            "p2pfl_metrics_stale_scrapes",
            "Scrapes answered with the previous snapshot because the peer's loop was busy.",
        )
        stale.add_metric([], self.stale)
        return [*families, errors, stale]

    # ------------------------------------------------------------------------------------ families
    def _families(self, s: Snapshot) -> Iterator[Metric]:
        info = GaugeMetricFamily("p2pfl_peer_info", "This peer (value 1).", labels=["peer_id", "network_id"])
        info.add_metric([s.peer_id, s.network_id], 1)
        yield info
        yield from self._bytes(s)
        yield _counter(
            "p2pfl_envelopes_accepted", "Delta envelopes verified and applied to a replica.", s.accepted
        )
        yield _counter(
            "p2pfl_envelopes_duplicate", "Envelopes of a version already held (harmless).", s.duplicates
        )
        rejected = CounterMetricFamily(
            "p2pfl_envelopes_rejected", "Messages and responses rejected, by reason slug.", labels=["reason"]
        )
        for reason, n in _merge(s.rejections, self._reasons).items():
            rejected.add_metric([reason], n)
        yield rejected
        failures = CounterMetricFamily(
            "p2pfl_snapshot_failures", "Snapshot requests that failed, by reason.", labels=["reason"]
        )
        snap = {r.removeprefix("snapshot_"): n for r, n in s.rejections.items() if r.startswith("snapshot_")}
        for reason, n in _merge(snap, self._reasons).items():
            failures.add_metric([reason], n)
        yield failures
        dropped = CounterMetricFamily(
            "p2pfl_transport_dropped",
            "Connections, streams and messages the transport refused before the engine saw them, by reason.",
            labels=["reason"],
        )
        for reason, n in _merge(s.transport_dropped, self._drop_reasons).items():
            dropped.add_metric([reason], n)
        yield dropped
        yield _gauge("p2pfl_round", "Rounds done (a resumed peer counts on from its checkpoint).", s.round)
        yield _gauge("p2pfl_model_seq", "Version of the own public model.", s.seq)
        yield from self._neighbours(s)
        if s.val_accuracy is not None:
            yield _gauge(
                "p2pfl_validation_accuracy", "Own model's validation accuracy (0..1).", s.val_accuracy
            )
        if s.val_loss is not None:
            yield _gauge("p2pfl_validation_loss", "Own model's validation loss.", s.val_loss)
        yield from _quality(s)
        if self.privacy_budget is not None:
            spent = self.privacy_budget()
            if spent is not None:
                yield _gauge(
                    "p2pfl_privacy_epsilon_spent", "Differential-privacy budget spent (epsilon).", spent
                )

    def _bytes(self, s: Snapshot) -> Iterator[Metric]:
        for direction, by, wire in (
            ("sent", s.sent_by, s.wire_sent),
            ("received", s.received_by, s.wire_received),
        ):
            kinds = dict.fromkeys(BYTE_KINDS, 0)
            for key, n in by.items():
                kind = byte_kind(key)
                kinds[kind] = kinds.get(kind, 0) + n
            app = sum(by.values())
            self._control[direction] = max(self._control[direction], wire - app)
            kinds["libp2p_control"] = self._control[direction]
            family = CounterMetricFamily(
                f"p2pfl_{direction}_bytes",
                f"Bytes {direction} by kind; the sum over kinds is all the peer's traffic "
                f"({'egress' if direction == 'sent' else 'ingress'}).",
                labels=["kind"],
            )
            for kind, n in kinds.items():
                family.add_metric([kind], n)
            yield family

    def _neighbours(self, s: Snapshot) -> Iterator[Metric]:
        states = dict.fromkeys(NEIGHBOUR_STATES, 0)
        states["connected"] = len(s.neighbours)
        for peer, status in s.neighbours.items():
            if status == "active" and peer in s.replicas:
                states["established"] += 1
            elif status in ("young", "probation", "excluded"):
                states[status] += 1
        family = GaugeMetricFamily(
            "p2pfl_neighbours",
            "Connected learning neighbours: all, established (full weight earned, model held), young (new, "
            "earning its weight), on probation (readmitted, not mixed), excluded (reputation too low).",
            labels=["state"],
        )
        for state, n in states.items():
            family.add_metric([state], n)
        yield family
        yield _gauge("p2pfl_evicted_peers", "Peers evicted now.", s.evicted)
        yield _gauge("p2pfl_solo_rounds", "Solo rounds (no neighbour's model mixed) in a row.", s.solo_rounds)
        yield _gauge(
            "p2pfl_solo_paused", "1 while paused after [peer] solo_rounds solo rounds.", s.solo_paused
        )
        for peer in sorted(s.reputation):  # a stable order: labels are handed out first come, first served
            self._peers.label(peer)
        rep = GaugeMetricFamily(
            "p2pfl_neighbour_reputation",
            f"Reputation of a neighbour (the first {NEIGHBOUR_LABEL_CAP} seen have a series).",
            labels=["peer"],
        )
        for peer, value in sorted(s.reputation.items()):
            if self._peers.owns(peer):
                rep.add_metric([peer], value)
        yield rep
        rejected = CounterMetricFamily(
            "p2pfl_neighbour_rejections",
            f"Rejections counted against a peer (the first {NEIGHBOUR_LABEL_CAP} seen; the rest: other).",
            labels=["peer"],
        )
        for peer, n in self._rejections.update(s.rejections_by_peer, self._peers).items():
            rejected.add_metric([peer], n)
        yield rejected


def _quality(s: Snapshot) -> Iterator[Metric]:
    """The newest version's quality and deltas, and the rollout's state and event counts."""
    for key, (name, doc) in QUALITY_GAUGES.items():
        value = s.quality.get(key)
        if value is not None:
            yield _gauge(name, doc, value)
    r = s.rollout
    yield _gauge(
        "p2pfl_rollout_enabled",
        "1 when the shadow/canary rollout is on ([rollout] enabled).",
        bool(r.get("enabled")),
    )
    phase = GaugeMetricFamily(
        "p2pfl_rollout_candidate_phase",
        "1 for the phase the candidate is in (none: all 0).",
        labels=["phase"],
    )
    for name in ROLLOUT_PHASES:
        phase.add_metric([name], 1 if r.get("phase") == name else 0)
    yield phase
    yield _gauge(
        "p2pfl_rollout_feedback_samples", "Labelled feedback samples kept.", int(r.get("feedback") or 0)
    )
    for key, (name, doc) in ROLLOUT_COUNTERS.items():
        yield _counter(name, doc, int(r.get(key) or 0))


def _merge(counts: dict[str, int], cap: LabelCap) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in sorted(counts):
        label = cap.label(key)
        out[label] = out.get(label, 0) + counts[key]
    return out


class Tally:
    """Per label, the counts of a table that forgets keys (the engine keeps the rejection counts of its most
    recently rejected identities only: p2pfl.protocol.churn), summed into counters that never go down: each
    scrape adds what each key's count grew by since the last one; a count below the last (the key was
    dropped, then counted anew) adds all of it. (A key dropped and counted anew past its old count between
    two scrapes is under-counted by the old count.) Holds the last counts of the table's keys only."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._totals: dict[str, int] = {}

    def update(self, counts: dict[str, int], cap: LabelCap) -> dict[str, int]:
        for key in sorted(counts):
            n, before = counts[key], self._last.get(key, 0)
            label = cap.label(key)
            self._totals[label] = self._totals.get(label, 0) + (n - before if n >= before else n)
        self._last = dict(counts)
        return dict(self._totals)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family
