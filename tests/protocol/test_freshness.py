"""The freshness rule (p2pfl/protocol/freshness.py) against an attacker who knows it, and for honest peers
whose clocks are off: the window's edges, skewed clocks within the bound, a far-future timestamp that must
leave nothing behind, the config's checks and the peer passing its wall clock. Pure but the last: a fake
clock (``now`` monotonic, the wall clock ``WALL0 + now``)."""

from __future__ import annotations

import math

import pytest
import trio

from p2pfl.errors import ConfigError
from p2pfl.identity import Identity
from p2pfl.peer_store import now_ms
from p2pfl.protocol import GossipEngine, ProtocolConfig, RequestSnapshot
from p2pfl.protocol.freshness import (
    FUTURE_TIMESTAMP,
    MAX_CLOCK_SKEW_S,
    MAX_VERSION_AGE_S,
    STALE_TIMESTAMP,
    timestamp_error,
)
from p2pfl.transport.memory import MemoryNetwork
from tests.protocol.test_churn import _engine, _seed
from tests.protocol.test_churn_blocks import exchange_for
from tests.protocol.test_engine import model
from tests.protocol.test_replay_attack import MALLORY, gossip, publish, wall_ms

AGE, SKEW = MAX_VERSION_AGE_S, MAX_CLOCK_SKEW_S
MS = 0.001


def test_the_window_includes_its_ends_and_every_timestamp_has_an_outcome() -> None:
    wall = wall_ms(0.0)
    at = [
        timestamp_error(ts, wall, AGE, SKEW)
        for ts in (wall - 300_000, wall - 300_001, wall + 60_000, wall + 60_001, 0, 2**64 - 1)
    ]
    assert at == [None, STALE_TIMESTAMP, None, FUTURE_TIMESTAMP, STALE_TIMESTAMP, FUTURE_TIMESTAMP]
    assert timestamp_error(0, wall, math.inf, SKEW) is None  # no age limit


def _victim() -> GossipEngine:
    return _engine(_seed(1), scoring=False)


def test_the_freshest_replay_at_the_edge_brings_back_a_model_no_older_than_the_window() -> None:
    """The adaptive attacker replays X's version 1 as late as the rule lets it: at the window's last
    millisecond it applies (anything signed within the window is indistinguishable from a late delivery), a
    millisecond later it is refused. So the ghost is X's model of at most ``max_version_age_s`` ago."""
    x = _engine(_seed(7), scoring=False)
    first = publish(x, 0.0, 0.01)
    late = _victim()
    assert not gossip(late, first, MALLORY, AGE + MS)
    assert late.rejections[STALE_TIMESTAMP] == 1 and x.peer_id not in late.replicas
    edge = _victim()
    assert gossip(edge, first, MALLORY, AGE)
    assert edge.replicas[x.peer_id].seq == 1


def test_a_signer_whose_clock_runs_ahead_extends_a_replay_by_the_skew_only() -> None:
    """X's clock runs ``max_clock_skew_s`` ahead (accepted: within the bound), so its versions can be
    replayed that much longer, never more: the whole replay window is ``max_version_age_s +
    max_clock_skew_s`` after the signing."""
    x = _engine(_seed(7), scoring=False)
    first = publish(x, 0.0, 0.01, clock_error_s=SKEW)
    assert gossip(_victim(), first, MALLORY, 0.0)
    assert gossip(_victim(), first, MALLORY, AGE + SKEW)
    assert not gossip(_victim(), first, MALLORY, AGE + SKEW + MS)


def test_the_freshest_recorded_versions_of_a_signer_the_victim_never_held_only_pull_its_current_model() -> (
    None
):
    """X publishes every 10 s; Mallory recorded all of it and, at t = 400 s, replays every version to a
    victim that never held X. Those inside the window pass the validator, but none applies: only a version 1
    continues the common initial model, and it is stale. The rest are gaps, whose answer is a snapshot of
    X's *current* model, asked of X itself."""
    x = _engine(_seed(7), scoring=False)
    recorded = [publish(x, 10.0 * i, 0.01) for i in range(41)]  # versions 1..41, t = 0..400
    victim = _victim()
    now = 400.0
    asked = []
    for env in recorded:
        if victim.accept_gossip(env, MALLORY, now, wall_ms=wall_ms(now)):
            asked += victim.handle_announce(env, MALLORY, now, wall_ms=wall_ms(now))
    assert victim.rejections[STALE_TIMESTAMP] == 10  # t = 0..90: older than 300 s
    assert x.peer_id not in victim.replicas
    assert [(a.peer, a.via) for a in asked if isinstance(a, RequestSnapshot)] == [(x.peer_id, MALLORY)]
    victim.handle_snapshot(x.serve_snapshot(wall_ms(now)), x.peer_id, now)
    rep = victim.replicas[x.peer_id]
    assert (rep.seq, rep.digest) == (41, x.public_digest)  # X's current model, not a recorded one


@pytest.mark.parametrize("clock_error_s", [-SKEW, -SKEW / 2, -1.0, 0.0, 1.0, SKEW / 2, SKEW])
def test_honest_peers_with_clocks_off_within_the_bound_are_accepted(clock_error_s: float) -> None:
    """A chain of X's versions, its clock off by up to the skew bound either way, each delivered at once and
    (for a clock behind) after the longest delay the bound leaves it: all applied, nothing refused."""
    x = _engine(_seed(7), scoring=False)
    victim = _victim()
    delay = AGE - SKEW if clock_error_s < 0 else 0.0
    for i in range(5):
        sent = 1000.0 * i
        assert gossip(victim, publish(x, sent, 0.01, clock_error_s), x.peer_id, sent + delay)
    assert victim.replicas[x.peer_id].seq == 5
    assert sum(victim.rejections.values()) == 0


def test_clocks_off_beyond_the_bound_are_refused_and_counted() -> None:
    x = _engine(_seed(7), scoring=False)
    victim = _victim()
    assert not gossip(victim, publish(x, 0.0, 0.01, clock_error_s=SKEW + 1.0), x.peer_id, 0.0)
    assert not gossip(victim, publish(x, 1.0, 0.01, clock_error_s=-SKEW), x.peer_id, 1.0 + AGE - SKEW + 1.0)
    assert dict(victim.rejections) == {FUTURE_TIMESTAMP: 1, STALE_TIMESTAMP: 1}
    assert dict(victim.rejections_by_peer[x.peer_id]) == dict(victim.rejections)  # it forwarded them


def test_a_far_future_version_leaves_no_floor_that_blocks_the_signers_later_versions() -> None:
    """X's clock jumps a day ahead for one version (an NTP fault), then is fixed. The far-future version is
    refused and remembered nowhere: the next version, with an honest (much smaller) timestamp, resyncs by a
    snapshot and the one after applies directly. A version stamped near the skew bound is followed by one
    stamped earlier (its clock stepped back): accepted too, timestamps need not increase."""
    x = _engine(_seed(7), scoring=False)
    victim = _victim()
    assert gossip(victim, publish(x, 0.0, 0.01), x.peer_id, 0.0)
    assert not gossip(victim, publish(x, 10.0, 0.01, clock_error_s=86_400.0), x.peer_id, 10.0)
    assert victim.rejections[FUTURE_TIMESTAMP] == 1
    actions = victim.handle_announce(publish(x, 20.0, 0.01), x.peer_id, 20.0, wall_ms=wall_ms(20.0))
    assert [type(a) for a in actions] == [RequestSnapshot]  # version 3 after 1: a gap, not a refusal
    victim.handle_snapshot(x.serve_snapshot(wall_ms(20.0)), x.peer_id, 20.0)
    assert gossip(victim, publish(x, 30.0, 0.01, clock_error_s=SKEW), x.peer_id, 30.0)
    assert gossip(victim, publish(x, 31.0, 0.01), x.peer_id, 31.0)
    assert victim.replicas[x.peer_id].seq == 5
    assert victim.rejections[FUTURE_TIMESTAMP] == 1 and victim.rejections[STALE_TIMESTAMP] == 0


def test_a_snapshot_signed_days_ago_is_still_served_and_accepted() -> None:
    """A finished peer serves its final model, signed once and cached, for days: snapshots come over an
    authenticated stream from their signer and are exempt from the window."""
    x = _engine(_seed(7), scoring=False)
    for i in range(3):
        publish(x, float(i), 0.01)
    snapshot = x.serve_snapshot(wall_ms(2.0))
    victim = _victim()
    three_days = 3 * 86_400.0
    assert gossip(victim, publish(_engine(_seed(8), scoring=False), three_days, 0.01), "n", three_days)
    victim.handle_snapshot(snapshot, x.peer_id, three_days)
    assert victim.replicas[x.peer_id].seq == 3
    assert victim.join_from_snapshots({x.peer_id: snapshot}, three_days) == 1


@pytest.mark.parametrize(
    ("age", "skew"),
    [
        (60.0, 60.0),
        (30.0, 60.0),
        (300.0, 0.0),
        (300.0, -1.0),
        (300.0, math.inf),
        (math.nan, 60.0),
        (300.0, True),
    ],
)
def test_a_window_that_could_refuse_honest_peers_is_a_config_error(age: float, skew: float) -> None:
    with pytest.raises(ConfigError, match=r"max_(version_age|clock_skew)_s"):
        ProtocolConfig(network_id="t", max_version_age_s=age, max_clock_skew_s=skew)


def test_the_window_is_configurable_and_may_be_unlimited() -> None:
    cfg = ProtocolConfig(network_id="t", max_version_age_s=math.inf, max_clock_skew_s=5.0)
    victim = GossipEngine(Identity(_seed(1)), cfg, model(), scoring_enabled=False)
    x = _engine(_seed(7), scoring=False)
    assert gossip(victim, publish(x, 0.0, 0.01), MALLORY, 86_400.0)  # a day old: no age limit
    assert not gossip(victim, publish(x, 1.0, 0.01, clock_error_s=6.0), x.peer_id, 1.0)
    assert victim.rejections[FUTURE_TIMESTAMP] == 1


def test_the_peer_judges_gossip_by_its_wall_clock() -> None:
    """The exchange (what the transports call) passes the wall clock: an envelope stamped now passes, the
    same version stamped an hour ago is refused, at the validator and at delivery."""
    x = _engine(_seed(7), scoring=False)
    victim = _victim()
    trained = {k: v + 0.01 for k, v in x.own_params().items()}
    hour_old = x.publish_trained(trained, timestamp_ms=now_ms() - 3_600_000).envelope
    fresh = _engine(_seed(7), scoring=False).publish_trained(trained, timestamp_ms=now_ms()).envelope

    async def main() -> tuple[bool, bool]:
        async with trio.open_nursery() as nursery, MemoryNetwork().open(network_id="t", peer_id="v") as t:
            exchange = exchange_for(victim, t, nursery)
            old_ok = exchange.validate_gossip(MALLORY, hour_old)
            await exchange.on_gossip(MALLORY, hour_old)
            return old_ok, exchange.validate_from(x.peer_id, x.peer_id, fresh)

    assert trio.run(main) == (False, True)
    assert victim.rejections_by_peer[MALLORY] == {STALE_TIMESTAMP: 2}


def test_replays_inside_the_window_do_not_spend_the_signers_rate_tokens_either() -> None:
    """The adaptive attacker floods copies of X's versions that are still fresh (X's current one and the one
    before): they pass the window, but each is a copy of a version the victim holds, which moves nothing.
    Charged to X's sender bucket they emptied it, and X's next version was dropped as ``rate_limited``."""
    x = _engine(_seed(7), scoring=False)
    victim = _victim()
    recent = [publish(x, 100.0 + i, 0.01) for i in range(2)]
    for env in recent:
        assert gossip(victim, env, x.peer_id, 101.0)
    for i in range(200):
        gossip(victim, recent[i % 2], f"m{i}", 102.0)
    assert gossip(victim, publish(x, 102.0, 0.01), x.peer_id, 102.0)
    assert victim.replicas[x.peer_id].seq == 3
    assert victim.rejections["rate_limited"] == 0
    assert victim.duplicates + victim.rejections["replay"] == 200  # each copy refused on delivery, as before


@pytest.mark.parametrize("huge", [1e306, 1e300, float(2**70)])
def test_a_bound_too_long_to_matter_is_no_bound_not_a_crash(huge: float) -> None:
    """Review: ``math.ceil(1e306 * 1000)`` raised OverflowError on every message (all gossip refused as
    internal_error). A bound of 2^64 ms or more now limits nothing; the other bound still holds."""
    wall = 1_800_000_000_000
    assert timestamp_error(0, wall, huge, 60.0) is None
    assert timestamp_error(2**64 - 1, wall, 300.0, huge) is None
    assert timestamp_error(wall + 61_000, wall, huge, 60.0) == "future_timestamp"
    assert timestamp_error(0, wall, 300.0, huge) == "stale_timestamp"
