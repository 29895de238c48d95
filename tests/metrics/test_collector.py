"""The scrape-time collector on hand-made snapshots: bounded labels, monotone counters, the listen parser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from p2pfl.errors import ConfigError
from p2pfl.metrics.collector import NEIGHBOUR_LABEL_CAP, OTHER, LabelCap, SnapshotCollector, byte_kind
from p2pfl.metrics.listen import parse_listen
from p2pfl.metrics.snapshot import Snapshot
from p2pfl.transport.base import GOSSIP


def snap(**kw: object) -> Snapshot:
    return Snapshot(peer_id="12D3KooWself", network_id="n", round=1, seq=1, **kw)  # type: ignore[arg-type]


def samples(collector: SnapshotCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_per_neighbour_series_stay_under_the_cap_however_many_peers_come_and_go() -> None:
    """A Sybil flood of 1000 identities: 64 own series, the rest summed in ``other``; the sum is kept."""
    current: dict[str, object] = {}

    def take() -> Snapshot:
        return snap(**current)

    collector = SnapshotCollector(take)
    for wave in range(10):  # 100 new peers per scrape, each with 2 rejections
        peers = [f"12D3KooW{wave:02d}{i:03d}" for i in range(100)]
        current["rejections_by_peer"] = {p: 2 for p in peers}
        current["reputation"] = {p: 0.5 for p in peers}
        s = samples(collector)
        rejected = {k: v for k, v in s.items() if k[0] == "p2pfl_neighbour_rejections_total"}
        reputation = {k: v for k, v in s.items() if k[0] == "p2pfl_neighbour_reputation"}
        assert len(rejected) <= NEIGHBOUR_LABEL_CAP + 1
        assert len(reputation) <= NEIGHBOUR_LABEL_CAP
        # every wave's counts land somewhere (the first 64 peers ever seen, or other), and stay there
        # (the engine's table forgets peers: a counter does not)
        assert sum(rejected.values()) == 200 * (wave + 1)


def test_label_cap_is_sticky() -> None:
    cap = LabelCap(2)
    assert [cap.label(x) for x in ("a", "b", "c", "a", "b", "c")] == ["a", "b", OTHER, "a", "b", OTHER]
    assert cap.label(OTHER) == OTHER


def test_control_bytes_are_the_wire_bytes_no_kind_claims_and_never_go_down() -> None:
    current = {"wire_sent": 1000, "sent_by": {GOSSIP: 300, "/p2pfl/delta/1": 200, "/p2pfl/bootstrap/1": 50}}
    collector = SnapshotCollector(lambda: snap(**current))
    s = samples(collector)
    sent = {dict(k[1])["kind"]: v for k, v in s.items() if k[0] == "p2pfl_sent_bytes_total"}
    assert sent == {"gossip": 300, "model_payload": 200, "discovery": 50, "libp2p_control": 450}
    # app bytes counted before their wire bytes (a publish queued, not yet written): control holds
    current = {"wire_sent": 1000, "sent_by": {GOSSIP: 600, "/p2pfl/delta/1": 200, "/p2pfl/bootstrap/1": 50}}
    s = samples(collector)
    assert s[("p2pfl_sent_bytes_total", (("kind", "libp2p_control"),))] == 450


def test_byte_kinds() -> None:
    assert byte_kind(GOSSIP) == "gossip"
    assert byte_kind("/p2pfl/snapshot/1") == "model_payload"
    assert byte_kind("/p2pfl/bootstrap/1") == "discovery"


def test_neighbour_states() -> None:
    """``young`` (a new identity earning its influence, issue 15) is its own state: never established, even
    with its model held, and never counted as on probation (a readmitted peer)."""
    s = snap(
        neighbours={
            "a": "active",
            "b": "active",
            "c": "probation",
            "d": "excluded",
            "e": "young",
            "f": "young",
        },
        replicas=frozenset({"a", "c", "e"}),
    )
    got = samples(SnapshotCollector(lambda: s))
    states = {dict(k[1])["state"]: v for k, v in got.items() if k[0] == "p2pfl_neighbours"}
    assert states == {"connected": 6, "established": 1, "young": 2, "probation": 1, "excluded": 1}


def test_a_young_neighbour_of_the_real_scorer_is_counted_young_not_established() -> None:
    """The scorer's own statuses, not hand-written strings: a peer first heard after the founding rounds is
    ``young`` until it has earned its weight, then ``established``."""
    from p2pfl.scoring import ContributionScorer, ScoringConfig

    scorer = ContributionScorer(ScoringConfig(founding_rounds=1, young_rounds=2, ramp_rounds=0))
    scorer.begin_round()
    assert scorer.status("founder") == "active"
    scorer.begin_round()
    status = scorer.status("newcomer")
    assert status == "young"
    s = snap(neighbours={"newcomer": status}, replicas=frozenset({"newcomer"}))
    got = samples(SnapshotCollector(lambda: s))
    assert got[("p2pfl_neighbours", (("state", "young"),))] == 1
    assert got[("p2pfl_neighbours", (("state", "established"),))] == 0


@given(st.text(max_size=40))
def test_parse_listen_returns_an_address_or_a_config_error(text: str) -> None:
    try:
        host, port = parse_listen(text)
    except ConfigError as exc:
        assert (exc.section, exc.key) == ("metrics", "listen")
        return
    assert 0 <= port <= 65535 and host


def test_parse_listen_accepts_the_documented_forms() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert parse_listen("localhost:0") == ("localhost", 0)
    assert parse_listen("0.0.0.0:9464") == ("0.0.0.0", 9464)


def test_neighbour_rejections_never_go_down_when_the_engine_forgets_a_peer() -> None:
    """The engine keeps the rejection counts of its ``MAX_REJECTING`` most recently rejected identities only
    (p2pfl.protocol.churn): an entry dropped from its table must not take its counts out of the counter
    (``other``'s fell, and a labelled peer's series vanished, then restarted from its new count)."""
    labelled = {f"12D3KooWp{i:03d}": 1 for i in range(NEIGHBOUR_LABEL_CAP)}
    current: dict[str, object] = {"rejections_by_peer": {**labelled, "12D3KooWq": 10}}
    collector = SnapshotCollector(lambda: snap(**current))

    def rejected() -> dict[str, float]:
        s = samples(collector)
        return {dict(k[1])["peer"]: v for k, v in s.items() if k[0] == "p2pfl_neighbour_rejections_total"}

    first = rejected()
    assert first[OTHER] == 10 and first["12D3KooWp000"] == 1
    # the engine dropped q and p000 (least recently rejected); r is new; p001 was rejected once more
    current["rejections_by_peer"] = {
        **{p: n for p, n in labelled.items() if p != "12D3KooWp000"},
        "12D3KooWp001": 2,
        "12D3KooWr": 1,
    }
    second = rejected()
    assert second[OTHER] == 11 and second["12D3KooWp000"] == 1 and second["12D3KooWp001"] == 2
    current["rejections_by_peer"] = {**labelled, "12D3KooWp000": 3}  # p000 rejected again: a new entry
    third = rejected()
    assert third["12D3KooWp000"] == 4 and third[OTHER] == 11
    assert rejected() == third  # the same snapshot again (a stale scrape) adds nothing


def test_transport_drops_are_counted_by_reason() -> None:
    current = {"transport_dropped": {"inbound_rate": 3, "inbound_handshakes": 1}}
    s = samples(SnapshotCollector(lambda: snap(**current)))
    assert s[("p2pfl_transport_dropped_total", (("reason", "inbound_rate"),))] == 3
    assert s[("p2pfl_transport_dropped_total", (("reason", "inbound_handshakes"),))] == 1
