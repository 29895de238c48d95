"""The replay of an identity's old, validly signed versions to a peer that holds no floor for it (it never
saw the identity, or forgot it and its replay floor): what it did before the freshness rule, and that the rule
refuses it (p2pfl/protocol/freshness.py). Engine-level, on a fake clock: ``now`` is the engine's monotonic
clock, the wall clock is ``WALL0 + now`` (ms since the epoch, as the peer passes it).

Measured on the code before the rule (commit 4bda48d; the same calls without ``wall_ms``): in the first test
the victim applied all 12 replayed versions and mixed the ghost at weight 1.0 in each of its 12 rounds, as a
founder; in the second, the old far-off versions scored bad until the victim evicted their honest signer
(banned at the transport too); in the third the victim applied the chain again after forgetting the signer;
in the fourth 60 of 100 replays passed the validator and the signer's next fresh version was dropped as
``rate_limited``. Each test fails on that code: the engine had no wall clock to judge a version's age by.
"""

from __future__ import annotations

import numpy as np

from p2pfl.protocol import GossipEngine, Publish
from p2pfl.protocol.idle import MAX_FORGOTTEN
from tests.protocol.test_churn import _engine, _seed

WALL0 = 1_800_000_000.0
SIX_HOURS = 6 * 3600.0
MALLORY = "mallory"  # the forwarder that recorded the envelopes and replays them


def wall_ms(now: float) -> int:
    return int((WALL0 + now) * 1000)


def publish(e: GossipEngine, now: float, delta: float, clock_error_s: float = 0.0) -> bytes:
    """``e`` trains by ``delta`` and publishes, stamping its own clock (off by ``clock_error_s``)."""
    trained = {k: v + np.float32(delta) for k, v in e.own_params().items()}
    act = e.finish_round(trained, now, timestamp_ms=wall_ms(now + clock_error_s)).actions[0]
    assert isinstance(act, Publish)
    return act.envelope


def gossip(victim: GossipEngine, env: bytes, via: str, now: float) -> bool:
    """What the peer does with a gossip message: the validator, then (if it passed) the delivery."""
    ok = victim.accept_gossip(env, via, now, wall_ms=wall_ms(now))
    if ok:
        victim.handle_announce(env, via, now, wall_ms=wall_ms(now))
    return ok


def test_an_old_chain_replayed_to_a_victim_in_its_founding_rounds_is_not_mixed() -> None:
    """X published 12 versions six hours before the victim started; Mallory recorded them and replays one
    per round of the victim's first rounds, next to three honest neighbours. Before: a ghost founder at
    full weight, an old model mixed as fresh."""
    x = _engine(_seed(7), scoring=False)
    chain = [publish(x, float(i), 0.01) for i in range(12)]
    victim = _engine(_seed(1))
    honest = [_engine(_seed(20 + j), scoring=False) for j in range(3)]
    for r, env in enumerate(chain):
        now = SIX_HOURS + r
        for e in honest:
            assert gossip(victim, publish(e, now, 0.01), e.peer_id, now)
        assert not gossip(victim, env, MALLORY, now)
        out = victim.finish_round(victim.own_params(), now)
        assert [c.peer for c in out.contributions] == sorted(e.peer_id for e in honest)
    assert x.peer_id not in victim.replicas
    scorer = victim.scorer
    assert scorer is not None and not scorer.is_founder(x.peer_id)
    assert victim.rejections["stale_timestamp"] == 12
    assert victim.rejections_by_peer[MALLORY]["stale_timestamp"] == 12  # the replayer, not the signer
    assert x.peer_id not in victim.rejections_by_peer


def test_far_off_old_versions_cannot_get_their_honest_signer_evicted() -> None:
    """X's first versions were far from where the network is now (early training). Replayed hours later they
    scored bad at the victim until it evicted X, an honest peer: banned, disconnected, blocked."""
    x = _engine(_seed(7), scoring=False)
    chain = [publish(x, float(i), 0.5) for i in range(12)]
    victim = _engine(_seed(1))
    honest = [_engine(_seed(20 + j), scoring=False) for j in range(3)]
    evicted: list[str] = []
    for r, env in enumerate(chain):
        now = SIX_HOURS + r
        for e in honest:
            gossip(victim, publish(e, now, 0.01), e.peer_id, now)
        gossip(victim, env, MALLORY, now)
        evicted += victim.finish_round(victim.own_params(), now).evicted
    assert evicted == []
    assert not victim.is_evicted(x.peer_id)
    assert victim.bans.evictions_of(x.peer_id) == 0


def test_a_forgotten_signer_past_the_replay_floors_bound_is_not_revived() -> None:
    """The victim held X's replica; X finished its rounds (it only serves now) and the victim forgot it, then
    forgot 4096 other identities (an attacker's churn), which flushed X's replay floor. Before: the replayed
    chain applied again as a fresh replica."""
    victim = _engine(_seed(2))
    x = _engine(_seed(8), scoring=False)
    chain = [publish(x, float(i), 0.01) for i in range(3)]
    for env in chain:
        assert gossip(victim, env, x.peer_id, 2.0)
    victim.finish_round(victim.own_params(), 2.0)
    victim.finish_round(victim.own_params(), 100.0)  # idle past the horizon: forgotten, a floor kept
    assert x.peer_id not in victim.replicas and victim.forgotten.floor(x.peer_id) == 3
    victim.forgotten.remember((f"churned-{i}", 1) for i in range(MAX_FORGOTTEN))
    assert victim.forgotten.floor(x.peer_id) == -1  # the floor is gone
    now = SIX_HOURS
    for env in chain:
        assert not gossip(victim, env, MALLORY, now)
    assert x.peer_id not in victim.replicas
    assert victim.mixing_candidates(now) == []
    assert victim.rejections["stale_timestamp"] == 3


def test_replays_of_old_versions_do_not_spend_the_signers_rate_tokens() -> None:
    """Mallory floods the victim with X's old version 1 (X is a live neighbour at version 2). Before: each
    copy verified and charged X's sender bucket, and X's fresh version 3 was dropped as ``rate_limited``."""
    victim = _engine(_seed(3))
    x = _engine(_seed(9), scoring=False)
    old = publish(x, 0.0, 0.5)
    assert gossip(victim, old, x.peer_id, 0.0)  # fresh then
    now = SIX_HOURS
    assert gossip(victim, publish(x, now - 1, 0.5), x.peer_id, now - 1)
    refused = [victim.accept_gossip(old, f"m{i}", now, wall_ms=wall_ms(now)) for i in range(100)]
    assert not any(refused)
    assert gossip(victim, publish(x, now, 0.5), x.peer_id, now)
    assert victim.replicas[x.peer_id].seq == 3
    assert victim.rejections["rate_limited"] == 0
    assert victim.rejections["stale_timestamp"] == 100
