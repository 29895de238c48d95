"""Review regressions for p2pfl/protocol/churn.py: forgetting must give a returning identity nothing a new one
would not have, and a table an identity fills without ever holding a replica is bounded too. Pure: a fake
clock."""

from __future__ import annotations

from tests.protocol.test_churn import HORIZON, _engine, _publish, _seed


def test_a_founder_remembered_for_a_bad_version_comes_back_no_better_than_new() -> None:
    """A founder that sends one absurd version (remembered: worse than new) and goes quiet past the horizon
    must not keep its founder standing, which a founder with a clean record loses when it is forgotten: it
    comes back with no more weight than a newcomer."""
    victim = _engine(_seed(1))
    founder = _engine(_seed(2))
    others = [_engine(_seed(3 + j)) for j in range(3)]
    for i in range(3):
        for e in [founder, *others]:
            victim.handle_announce(_publish(e, float(i), 0.01), e.peer_id, float(i))
        victim.finish_round(victim.own_params(), float(i))
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
