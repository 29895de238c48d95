"""Review regressions for p2pfl/protocol/churn.py: forgetting must give a returning identity nothing a new one
would not have, and a table an identity fills without ever holding a replica is bounded too. Pure: a fake
clock."""

from __future__ import annotations

from p2pfl.protocol.churn import identity_tables
from tests.protocol.test_churn import HORIZON, _engine, _found, _publish, _seed


def test_a_founder_remembered_for_a_bad_version_comes_back_no_better_than_new() -> None:
    """A founder that sends one absurd version (remembered: worse than new) and goes quiet past the horizon
    must not keep its founder standing, which a founder with a clean record loses when it is forgotten: it
    comes back with no more weight than a newcomer."""
    victim = _engine(_seed(1))
    founder = _engine(_seed(2))
    others = [_engine(_seed(3 + j)) for j in range(3)]
    _found(victim, [founder, *others])
    scorer = victim.scorer
    assert scorer is not None and scorer.is_founder(founder.peer_id)
    now = 3.0
    victim.handle_announce(_publish(founder, now, 1e4), founder.peer_id, now)  # one absurd version
    for e in others:
        victim.handle_announce(_publish(e, now, 0.01), e.peer_id, now)
    victim.finish_round(victim.own_params(), now)
    state = scorer.state_of(founder.peer_id)
    assert state is not None and state.absurd == 1 and not victim.is_evicted(founder.peer_id)
    for i in range(int(HORIZON) + 5):  # the founder is silent; the others keep publishing
        now = 4.0 + i
        for e in others:
            victim.handle_announce(_publish(e, now, 0.01), e.peer_id, now)
        victim.finish_round(victim.own_params(), now)
    assert founder.peer_id not in victim.replicas and founder.peer_id in victim.quiet  # remembered
    newcomer = _engine(_seed(99))
    for e in (founder, newcomer):
        victim.handle_announce(_publish(e, now, 0.01), e.peer_id, now)
    victim.finish_round(victim.own_params(), now + 1)
    assert not scorer.is_founder(founder.peer_id)
    assert scorer.influence_cap(founder.peer_id) <= scorer.influence_cap(newcomer.peer_id)
    assert scorer.reputation(founder.peer_id) <= scorer.reputation(newcomer.peer_id)


def test_identities_that_never_get_a_replica_grow_no_table() -> None:
    """An attacker signs each version with a new key and sends only its second version (a gap: buffered with
    its payload, a snapshot asked for) and never answers the snapshot request. Without an expiry the want
    and the buffered payload of every such identity were kept for ever (nothing but a replica's forgetting
    dropped them), and each kept the identity live, so none of its other state was pruned either."""
    victim = _engine(_seed(1))
    honest = _engine(_seed(1000))
    rounds = 200
    for i in range(rounds):
        now = float(i)
        if i % 5 == 0:
            victim.handle_announce(_publish(honest, now, 0.005), honest.peer_id, now)
        attacker = _engine(_seed(10 + i), scoring=False)
        _publish(attacker, now, 0.01)  # version 1: never sent
        env = _publish(attacker, now, 0.01)  # version 2: no replica to continue
        victim.handle_announce(env, f"relay-{i}", now)
        victim.finish_round(victim.own_params(), now)
    live = HORIZON + 2
    assert len(victim._snapshot_wanted) <= live
    assert len(victim._pending) <= live
    assert identity_tables(victim)["replicas"] <= 2
