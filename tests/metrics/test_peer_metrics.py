"""A peer's metrics over the in-memory transport: several peers in one process, each with its own registry;
the values move with the events they count; nothing the metrics layer does can stop the peer."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from p2pfl.errors import ConfigError
from p2pfl.identity import Identity
from p2pfl.metrics.peer_metrics import PeerMetrics
from p2pfl.peer import Peer, PeerConfig
from p2pfl.protocol.actions import Evict, Readmit
from p2pfl.sim.data import peer_splits
from p2pfl.transport.memory import MemoryNetwork
from tests.test_peer import connect_all, inline, learner_for, run_all

#: every metric family a peer exports from its first scrape (name as the parser reports it: no ``_total``)
FAMILIES = {
    "p2pfl_peer_info",
    "p2pfl_sent_bytes",
    "p2pfl_received_bytes",
    "p2pfl_envelopes_accepted",
    "p2pfl_envelopes_duplicate",
    "p2pfl_envelopes_rejected",
    "p2pfl_snapshot_failures",
    "p2pfl_transport_dropped",
    "p2pfl_round",
    "p2pfl_model_seq",
    "p2pfl_neighbours",
    "p2pfl_evicted_peers",
    "p2pfl_neighbour_reputation",
    "p2pfl_neighbour_rejections",
    "p2pfl_metrics_errors",
    "p2pfl_metrics_stale_scrapes",
    "p2pfl_rounds",
    "p2pfl_round_duration_seconds",
    "p2pfl_evictions",
    "p2pfl_readmissions",
    "p2pfl_snapshot_fetches",
    "p2pfl_fetch_duration_seconds",
    "p2pfl_train_duration_seconds",
    "p2pfl_evaluate_duration_seconds",
    "p2pfl_rollout_enabled",
    "p2pfl_rollout_candidate_phase",
    "p2pfl_rollout_feedback_samples",
    "p2pfl_rollout_promotions",
    "p2pfl_rollout_demotions",
    "p2pfl_rollout_rollbacks",
}
#: quality gauges a peer exports once its first rounds are evaluated (absent before: undefined)
QUALITY_FAMILIES = {
    "p2pfl_validation_accuracy",
    "p2pfl_validation_loss",
    "p2pfl_validation_f1",
    "p2pfl_validation_auc",
    "p2pfl_quality_delta_auc",
    "p2pfl_quality_delta_f1",
    "p2pfl_rollout_serving_seq",
}


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``registry`` by (sample name, sorted labels)."""
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def families(registry: CollectorRegistry) -> set[str]:
    return {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}


def metered_peer(i: int, net: MemoryNetwork, registry: Any, **cfg: Any) -> Peer:
    splits = peer_splits("digits", 3, partition_kind="iid", seed=0)
    config = PeerConfig(network_id="digits", status_interval_s=0, local_steps=5, **cfg)
    return Peer(
        config,
        learner_for(splits[i], i),
        Identity(bytes([i + 1]) * 32),
        transport=lambda ident: net.open(network_id="digits", seed=ident.seed),
        run_sync=inline,
        metrics=registry,
    )


async def test_two_peers_in_one_process_export_their_own_metrics_and_they_move_with_rounds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    regs = [CollectorRegistry(), CollectorRegistry()]
    async with metered_peer(0, net, regs[0]) as a, metered_peer(1, net, regs[1]) as b:
        await connect_all([a, b])
        before = [scrape(r) for r in regs]
        assert FAMILIES <= families(regs[0])
        await run_all([a, b], 3)
        after = [scrape(r) for r in regs]
    for peer, s0, s1 in zip((a, b), before, after, strict=True):
        assert s1[("p2pfl_peer_info", (("network_id", "digits"), ("peer_id", peer.peer_id)))] == 1
        assert s1[("p2pfl_rounds_total", ())] - s0[("p2pfl_rounds_total", ())] == 3
        assert s1[("p2pfl_round_duration_seconds_count", ())] == 3
        assert s1[("p2pfl_train_duration_seconds_count", ())] == 3
        assert s1[("p2pfl_evaluate_duration_seconds_count", ())] >= 3
        assert s1[("p2pfl_round", ())] == 3
        sent = ("p2pfl_sent_bytes_total", (("kind", "gossip"),))
        assert s1[sent] > s0[sent]
        assert s1[("p2pfl_envelopes_accepted_total", ())] >= 1
        assert s1[("p2pfl_neighbours", (("state", "connected"),))] == 1
        assert s1[("p2pfl_validation_accuracy", ())] > 0
        assert QUALITY_FAMILIES <= {name for name, _ in s1}
        assert s1[("p2pfl_rollout_serving_seq", ())] == 3  # rollout off: the newest version is served
        assert s1[("p2pfl_metrics_errors_total", ())] == 0
        # the memory transport has no wire: every byte is accounted to a kind
        assert s1[("p2pfl_sent_bytes_total", (("kind", "libp2p_control"),))] == 0


async def test_evictions_readmissions_and_snapshot_fetches_are_counted() -> None:
    net = MemoryNetwork()
    registry = CollectorRegistry()
    peer = metered_peer(0, net, registry)
    metrics = peer.metrics
    assert metrics is not None
    async with peer:
        metrics.on_action(Evict("12D3KooWx", "bad scores"))
        metrics.on_action(Readmit("12D3KooWx", 1))
        metrics.on_request("/p2pfl/snapshot/1", 0.02, False)
        metrics.on_request("/p2pfl/snapshot/1", 0.01, True)
        metrics.on_request("/p2pfl/delta/1", 0.01, True)
        metrics.on_request("/p2pfl/bootstrap/1", 0.01, True)  # not a fetch: no series
        s = scrape(registry)
    assert s[("p2pfl_evictions_total", ())] == 1
    assert s[("p2pfl_readmissions_total", ())] == 1
    assert s[("p2pfl_snapshot_fetches_total", (("outcome", "failed"),))] == 1
    assert s[("p2pfl_snapshot_fetches_total", (("outcome", "ok"),))] == 1
    assert s[("p2pfl_fetch_duration_seconds_count", (("kind", "snapshot"),))] == 2
    assert s[("p2pfl_fetch_duration_seconds_count", (("kind", "model_payload"),))] == 1


async def test_a_forged_envelope_increments_its_rejection_reason() -> None:
    from p2pfl.wire import seal
    from tests.hostile_bytes import header_for

    net = MemoryNetwork()
    registry = CollectorRegistry()
    forger = Identity(bytes([9]) * 32)
    env = seal(forger, header_for(forger, "digits", b"x" * 16), None)
    forged = env[:-2] + bytes([env[-2] ^ 1]) + env[-1:]  # the signature's last byte
    async with metered_peer(0, net, registry) as peer:
        before = scrape(registry).get(("p2pfl_envelopes_rejected_total", (("reason", "bad_signature"),)), 0)
        assert not peer.exchange.validate_gossip(forger.peer_id, forged)
        after = scrape(registry)
    assert after[("p2pfl_envelopes_rejected_total", (("reason", "bad_signature"),))] == before + 1
    assert after[("p2pfl_neighbour_rejections_total", (("peer", forger.peer_id),))] == 1


async def test_a_stale_envelope_is_counted_by_its_reason_against_its_forwarder() -> None:
    from p2pfl.wire import seal
    from tests.hostile_bytes import header_for

    net = MemoryNetwork()
    registry = CollectorRegistry()
    signer = Identity(bytes([9]) * 32)
    hour_ago = int(time.time() * 1000) - 3_600_000
    env = seal(signer, header_for(signer, "digits", b"x" * 16, timestamp_ms=hour_ago), None)
    async with metered_peer(0, net, registry) as peer:
        assert not peer.exchange.validate_gossip("replayer", env)
        after = scrape(registry)
    assert after[("p2pfl_envelopes_rejected_total", (("reason", "stale_timestamp"),))] == 1
    assert after[("p2pfl_neighbour_rejections_total", (("peer", "replayer"),))] == 1


async def test_a_failing_metric_source_costs_a_count_not_the_peer() -> None:
    net = MemoryNetwork()
    registry = CollectorRegistry()
    peer = metered_peer(0, net, registry, min_neighbours=0)
    metrics = peer.metrics
    assert metrics is not None

    def broken() -> float:
        raise ValueError("the privacy accountant is broken")

    metrics.set_privacy_budget_source(broken)
    async with peer:
        s = scrape(registry)
        assert s[("p2pfl_metrics_errors_total", ())] == 1
        assert "p2pfl_sent_bytes" not in families(registry)  # that scrape ended: its counters are absent
        metrics.set_privacy_budget_source(lambda: 1.5)
        assert scrape(registry)[("p2pfl_privacy_epsilon_spent", ())] == 1.5
        metrics.set_privacy_budget_source(None)
        assert "p2pfl_privacy_epsilon_spent" not in families(registry)
        await peer.run(1)  # the peer goes on
    assert peer.round == 1


def test_a_peer_without_metrics_has_none() -> None:
    net = MemoryNetwork()
    splits = peer_splits("digits", 3, partition_kind="iid", seed=0)

    def peer(config: PeerConfig, metrics: Any = None) -> Peer:
        factory = lambda i: net.open(network_id="digits", seed=i.seed)  # noqa: E731
        return Peer(config, learner_for(splits[0], 0), transport=factory, metrics=metrics)

    assert peer(PeerConfig(network_id="digits")).metrics is None
    assert peer(PeerConfig(network_id="digits", metrics_listen="127.0.0.1:0"), metrics=False).metrics is None
    assert peer(PeerConfig(network_id="digits"), metrics=True).metrics is not None


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1", "127.0.0.1:99999", "host.example:9464", "::1:9464"])
def test_a_bad_metrics_address_is_a_config_error_naming_the_key(listen: str) -> None:
    with pytest.raises(ConfigError) as err:
        PeerConfig(network_id="digits", metrics_listen=listen)
    assert (err.value.section, err.value.key) == ("metrics", "listen")


async def test_the_endpoint_serves_the_registry_and_a_port_in_use_is_one_transport_error() -> None:
    import urllib.request

    from p2pfl.errors import TransportError

    net = MemoryNetwork()
    async with metered_peer(0, net, None, metrics_listen="127.0.0.1:0") as peer:
        assert peer.metrics is not None and peer.metrics.address is not None
        host, port = peer.metrics.address

        def get() -> str:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as resp:
                return str(resp.read().decode())

        text = await trio.to_thread.run_sync(get)
        assert "p2pfl_sent_bytes_total" in text
        other = metered_peer(1, net, None, metrics_listen=f"127.0.0.1:{port}")
        with pytest.raises(TransportError, match=r"\[metrics\] listen .*cannot listen") as err:
            async with other:
                pass
        assert isinstance(err.value.__cause__, OSError)
    assert isinstance(peer.metrics, PeerMetrics) and peer.metrics.address is None  # closed with the peer


async def test_a_scrape_while_the_peer_s_loop_is_busy_serves_the_previous_snapshot() -> None:
    """The loop blocked (as by a long aggregation): the scrape does not wait for it, it answers with the
    last snapshot and counts it stale; the snapshot it asked for serves the next scrape."""
    import threading
    import time

    net = MemoryNetwork()
    registry = CollectorRegistry()
    async with metered_peer(0, net, registry) as peer:
        assert peer.metrics is not None
        first = await trio.to_thread.run_sync(scrape, registry)  # a fresh snapshot: the loop is waiting
        assert first[("p2pfl_metrics_stale_scrapes_total", ())] == 0
        peer.engine.rejections["replay"] += 5
        done = trio.Event()
        result: dict[str, Any] = {}

        go = threading.Event()

        def scrape_in_thread() -> None:
            go.wait(10)
            result["s"] = scrape(registry)

        async def scraper() -> None:
            await trio.to_thread.run_sync(scrape_in_thread)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(scraper)
            await trio.sleep(0.01)  # the thread is started
            go.set()  # from here on the loop is blocked until the scrape has answered
            deadline = time.monotonic() + 10
            while "s" not in result and time.monotonic() < deadline:
                time.sleep(0.01)  # blocks the loop, on purpose
            await done.wait()
        stale = result["s"]
        assert stale[("p2pfl_metrics_stale_scrapes_total", ())] == 1
        assert ("p2pfl_envelopes_rejected_total", (("reason", "replay"),)) not in stale
        fresh = await trio.to_thread.run_sync(scrape, registry)
        assert fresh[("p2pfl_envelopes_rejected_total", (("reason", "replay"),))] == 5


async def test_a_poisoner_s_eviction_and_readmission_move_their_counters_and_log_their_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sign-flipping neighbour is evicted, readmitted on probation and evicted again (``readmit_after_s``
    0.5 s): the honest peer's counters follow, and each is a log event with its fields."""
    from contextlib import AsyncExitStack

    from p2pfl.sim.attacks import SignFlip
    from tests.test_peer import memory_peer

    caplog.set_level("INFO", logger="p2pfl.peer")
    splits = peer_splits("digits", 4, partition_kind="iid", seed=5)
    net = MemoryNetwork()
    ids = [Identity(bytes([i + 1]) * 32).peer_id for i in range(4)]
    attacker = ids[3]
    registry = CollectorRegistry()
    async with AsyncExitStack() as stack:
        peers = []
        for i in range(4):
            learner: Any = learner_for(splits[i], i)
            cfg: dict[str, Any] = {"max_round_wait_s": 2, "readmit_after_s": 0.5}
            if i == 3:
                learner = SignFlip(learner, scale=4.0)
                cfg |= {"static_peers": tuple(f"memory/{p}" for p in ids[:3]), "reconnect_interval_s": 0.1}
            peer = memory_peer(i, learner, net, **cfg)
            if i == 0:
                peer = Peer(
                    peer.config, learner, peer.identity, transport=peer._transport_factory, metrics=registry
                )
            peers.append(await stack.enter_async_context(peer))
        await connect_all(peers)
        async with trio.open_nursery() as n:
            for p in peers:
                n.start_soon(p.run)
            with trio.move_on_after(60):
                while peers[0].engine.evictions_of(attacker) < 2:
                    await trio.sleep(0.1)
            for p in peers:
                p.stop()
    s = scrape(registry)
    assert s[("p2pfl_evictions_total", ())] >= 2
    assert s[("p2pfl_readmissions_total", ())] >= 1
    events = [(getattr(r, "event", None), getattr(r, "event_fields", {})) for r in caplog.records]
    evictions = [f for e, f in events if e == "eviction" and f["peer"] == attacker]
    readmissions = [f for e, f in events if e == "readmission" and f["peer"] == attacker]
    assert evictions and all(f["reason"] for f in evictions)
    assert readmissions and all(f["evictions"] >= 1 for f in readmissions)
    assert sum(1 for e, _ in events if e == "round") >= 3
