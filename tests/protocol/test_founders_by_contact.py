"""Founders by contact (issue 16, young16): an identity in contact within the founding rounds is a founder
whether or not its first version arrived in them; an adaptive Sybil gains nothing by it.

The network is :class:`tests.protocol.learning_net.LearningNet` (real softmax regression, a fake clock of one
round per second); the honest engines are told their contacts each round as the peer's round loop tells
them (``GossipEngine.note_contacts``, p2pfl/peer_rounds.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from p2pfl.protocol import GossipEngine
from p2pfl.protocol.churn import identity_tables
from p2pfl.protocol.config import ProtocolConfig
from p2pfl.protocol.idle import FORGET_STALENESS_FACTOR
from p2pfl.scoring import ScoringConfig
from tests.protocol.learning_net import Behaviour, LearningNet, Params, sign_flip

#: the slow peer's lag: it publishes, every LAG rounds, the network's mean as it was LAG rounds before
LAG = 5
ROUNDS = 30
#: the adaptive attacker stays silent until this round, then publishes sign-flipped models every round
TURN = 9


def _slow(lag: int) -> Behaviour:
    """An honest peer slow from its first round: every ``lag`` rounds (the first after ``lag + 1``) it
    publishes the honest mean as it was ``lag`` rounds earlier (what it mixed, plus its stale training)."""
    seen: list[Params] = []

    def behave(round_: int, clean: Params) -> Params:
        seen.append(clean)
        if round_ <= lag or round_ % lag != 1:
            return {}
        return {k: v.copy() for k, v in seen[-1 - lag].items()}

    return behave


def _run_slow(contact_from: int) -> tuple[LearningNet, str, list[float]]:
    """Four honest peers and the slow one; the honest engines are in contact with it from their round
    ``contact_from`` on. Returns the net, its id and its share of each honest mix, every round. The heading
    signal is off: in this network (IID softmax regression, every model moving the same way each round) its
    lag test holds any model ``LAG`` rounds behind the centre, the very signature of IPM, founder or not
    (docs/scoring.md, "Founders by contact": in the simulations it held the slow founder in 2 of 16 cells)."""
    net = LearningNet(n_honest=4, steps=10, scoring=ScoringConfig(heading=False))
    (slow,) = net.add_attackers(1, _slow(LAG))
    shares: list[float] = []
    for r in range(1, ROUNDS + 1):
        for e in net.engines:
            if r >= contact_from:
                e.note_contacts([slow.peer_id], float(r))
        for out in net.step():
            own = out.own_weight
            total = own + sum(c.weight for c in out.contributions)
            shares += [c.weight / total for c in out.contributions if c.peer == slow.peer_id]
    return net, slow.peer_id, shares


def test_an_honest_peer_slow_from_its_first_round_is_a_founder_and_earns_weight() -> None:
    net, slow, shares = _run_slow(contact_from=1)
    assert all(e.scorer is not None and e.scorer.is_founder(slow) for e in net.engines)
    assert all(e.scorer is not None and e.scorer.status(slow) == "active" for e in net.engines)
    # its versions reach the mixes (1 / 5 of one: the own model and four neighbours at weight 1)
    assert np.mean(shares) > 0.05 and max(shares) > 0.15
    assert not any(e.is_evicted(slow) for e in net.engines)
    # published: its replica keeps it live, the contact record is done
    assert all(identity_tables(e)["contacts"] == 0 for e in net.engines)


def test_the_same_peer_first_in_contact_after_the_founding_rounds_stays_young() -> None:
    """The control: a contact after the founding rounds changes nothing (as its first version would not):
    young, and weight 0 for the whole run, which was the slow peer's lot before contacts counted."""
    net, slow, shares = _run_slow(contact_from=ScoringConfig().founding_rounds + 1)
    assert all(e.scorer is not None and not e.scorer.is_founder(slow) for e in net.engines)
    assert all(e.scorer is not None and e.scorer.status(slow) == "young" for e in net.engines)
    assert shares and max(shares) == 0.0


def _silent_then(attack: Callable[[Params], Params], *, publish_once: bool) -> Behaviour:
    """Silent (or, ``publish_once``, one honest-looking version in round 1) until ``TURN``, then
    ``attack(honest mean)`` every round."""
    rng = np.random.default_rng(7)

    def behave(round_: int, clean: Params) -> Params:
        if round_ >= TURN:
            noise = {k: rng.standard_normal(v.shape) * 1e-3 for k, v in clean.items()}
            return {k: (v + noise[k]).astype(np.float32) for k, v in attack(clean).items()}
        if publish_once and round_ == 1:
            return {k: v.copy() for k, v in clean.items()}
        return {}

    return behave


def _attack(
    attack: Callable[[Params], Params], *, publish_once: bool
) -> tuple[list[float], list[int | None]]:
    """The attacker's weight in each honest mix from ``TURN`` on (by round, then observer), and the round
    each honest peer evicted it (None: never). The silent one is in contact from round 1 (a founder by
    contact); the other published once in round 1 (a founder as first heard) and is never a contact."""
    net = LearningNet(n_honest=4, steps=10)
    (att,) = net.add_attackers(1, _silent_then(attack, publish_once=publish_once))
    weights: list[float] = []
    evicted_at: list[int | None] = [None] * len(net.engines)
    for r in range(1, TURN + 16):
        if not publish_once:
            for e in net.engines:
                e.note_contacts([att.peer_id], float(r))
        outs = net.step()
        for i, (e, out) in enumerate(zip(net.engines, outs, strict=True)):
            if r >= TURN:
                weights.append(sum(c.weight for c in out.contributions if c.peer == att.peer_id))
            if evicted_at[i] is None and e.is_evicted(att.peer_id):
                evicted_at[i] = r
    return weights, evicted_at


@pytest.mark.parametrize(
    "attack",
    [sign_flip(4.0), lambda clean: {k: 2.0 * v for k, v in clean.items()}],
    ids=["signflip", "amplified"],
)
def test_a_silent_founder_by_contact_that_turns_is_treated_no_better_than_a_sleeper_founder(
    attack: Callable[[Params], Params],
) -> None:
    """The adaptive attacker: in contact from the first round, silent, then poison. A sleeper founder that
    published one honest-looking version in round 1 and was silent until the same round is its equal:
    both are founders (outside the newcomer caps) and come back after a silence (the return grace). The
    silent one gets no more weight in any honest mix, round by round, and is evicted no later. (A
    sign-flip is dropped at once and evicted once the grace is spent; the amplified model, twice the
    honest mean, passes every check of a founder coming back, for both alike: docs/scoring.md.)"""
    silent_weights, silent_evicted = _attack(attack, publish_once=False)
    sleeper_weights, sleeper_evicted = _attack(attack, publish_once=True)
    assert len(silent_weights) == len(sleeper_weights)
    assert all(s <= t + 1e-9 for s, t in zip(silent_weights, sleeper_weights, strict=True))
    for s, t in zip(silent_evicted, sleeper_evicted, strict=True):
        assert t is None or (s is not None and s <= t)


def test_a_sign_flipping_silent_founder_by_contact_is_never_mixed_and_is_evicted() -> None:
    weights, evicted = _attack(sign_flip(4.0), publish_once=False)
    assert max(weights) == 0.0
    assert all(at is not None for at in evicted)


def _horizon(e: GossipEngine) -> float:
    """Just past the engine's forgetting horizon (p2pfl.protocol.churn)."""
    cfg: ProtocolConfig = e.config
    forget = (
        cfg.forget_after_s
        if cfg.forget_after_s is not None
        else FORGET_STALENESS_FACTOR * cfg.max_staleness_s
    )
    return max(forget, cfg.snapshot_retry_s) + 1.0


def test_staying_in_contact_does_not_keep_a_silent_identitys_record_past_the_horizon() -> None:
    """The review's sleeper: in contact every round and silent, a founder by contact is forgotten on the
    clock a silent founder is (from its first contact), not kept for as long as it stays connected; heard
    after that it is young. (Refreshed each round, it kept its founder's weight 1.0 on waking.)"""
    net = LearningNet(n_honest=2, steps=5)
    e: GossipEngine = net.engines[0]
    ghost = "12D3KooWghost"
    e.note_contacts([ghost], 1.0)
    for _ in range(7):  # past the founding rounds
        net.step()
    assert e.scorer is not None and e.scorer.is_founder(ghost)
    horizon = _horizon(e)
    for i in range(1, 42):  # in contact all along, every 1/40 of the horizon
        t = 1.0 + horizon * i / 40
        e.note_contacts([ghost], t)
        e.forget_idle(t)
    assert ghost not in e.scorer.known() and not e.scorer.is_founder(ghost)
    assert identity_tables(e)["contacts"] == 0


def test_a_contact_record_is_forgotten_out_of_contact_and_the_identity_comes_back_young() -> None:
    """Bounded like any identity (p2pfl.protocol.churn): a founder by contact that never publishes and
    leaves is dropped past the forgetting horizon; heard again after the founding rounds it is young."""
    net = LearningNet(n_honest=2, steps=5)
    e: GossipEngine = net.engines[0]
    ghost = "12D3KooWghost"
    e.note_contacts([ghost], 1.0)
    assert e.scorer is not None and e.scorer.is_founder(ghost)
    assert identity_tables(e)["contacts"] == 1
    horizon = _horizon(e)
    for _ in range(7):
        net.step()
    e.forget_idle(1.0 + horizon)
    assert identity_tables(e)["contacts"] == 0
    assert ghost not in e.scorer.known()
    e.note_contacts([ghost], 2.0 + horizon)  # after the founding rounds: no record, young when heard
    assert ghost not in e.scorer.known() and not e.scorer.is_founder(ghost)
