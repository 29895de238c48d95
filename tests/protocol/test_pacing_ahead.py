"""A peer behind its neighbours does not wait for them (p2pfl.protocol.pacing, "Ahead neighbours"): table
tests of the rule, a small discrete-time model of peers that wait, train and publish on a fake clock, where
one starts late and its neighbours finish their rounds and only serve, and the round a snapshot carries."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from p2pfl.identity import Identity
from p2pfl.protocol import GossipEngine, ProtocolConfig, Start, Wait
from p2pfl.protocol.pacing import NeighbourView, PacingConfig, RoundPacer, is_ahead
from p2pfl.wire import Meta, open_envelope

CFG = PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0)
#: the discrete-time model below runs the old round order (wait, train, publish and mix)
OLD_ORDER = PacingConfig(wait_before_mix=False)


def view(peer: str, update: float | None, seq: int | None, round_: int | None) -> NeighbourView:
    return NeighbourView(peer, 0.0, True, update, False, seq, round_)


def test_ahead_means_held_at_the_last_mix_and_of_the_next_round_or_later() -> None:
    held = {"a": 8}
    assert is_ahead(view("a", 1.0, 8, 8), 6, last_mix=2.0, mixed=held)
    assert is_ahead(view("a", 1.0, 8, 6), 6, last_mix=2.0, mixed=held)  # the round we are about to run
    assert not is_ahead(view("a", 1.0, 8, 5), 6, last_mix=2.0, mixed=held)  # in step: its next is ours
    assert not is_ahead(view("a", 3.0, 9, 9), 6, last_mix=2.0, mixed=held)  # new since the mix: fresh
    assert not is_ahead(view("a", 1.0, 8, None), 6, last_mix=2.0, mixed=held)  # no round reported
    assert not is_ahead(view("a", 1.0, 8, 8), None, last_mix=2.0, mixed=held)  # our round unknown
    assert not is_ahead(view("a", None, None, None), 6, last_mix=2.0, mixed=held)  # no replica
    assert not is_ahead(view("a", 1.0, 8, 8), 6, last_mix=-math.inf)  # no mix yet: every version is new


def test_a_round_whose_neighbours_are_all_ahead_starts_at_once() -> None:
    """The laggard among finished neighbours: the old rule waited ``max_round_wait_s`` (Start timeout
    at 12.0) for versions that never come."""
    pacer = RoundPacer(CFG)
    pacer.begin_wait(2.0, last_mix=1.5, work_s=0.1, mixed={"a": 80, "b": 80}, next_round=78)
    assert pacer.decide(2.0, [view("a", 1.0, 80, 80), view("b", 1.2, 80, 80)]) == Start("ahead")


def test_an_in_step_neighbour_is_still_waited_for() -> None:
    pacer = RoundPacer(CFG)
    pacer.begin_wait(2.0, last_mix=1.5, mixed={"a": 80, "s": 77}, next_round=78)
    views = [view("a", 1.0, 80, 80), view("s", 1.4, 77, 77)]  # s: one round behind a, in step with us
    assert isinstance(pacer.decide(2.0, views), Wait)
    assert pacer.decide(2.3, [views[0], view("s", 2.3, 78, 78)]) == Start("quorum")


def test_an_ahead_neighbour_with_a_new_version_counts_as_fresh() -> None:
    pacer = RoundPacer(CFG)
    pacer.begin_wait(2.0, last_mix=1.5, mixed={"a": 80, "b": 5}, next_round=6)
    views = [view("a", 1.8, 81, 81), view("b", 1.4, 5, 5)]
    assert isinstance(pacer.decide(2.0, views), Wait)  # b (in step) not yet: wait_fraction 1
    assert pacer.decide(2.1, [views[0], view("b", 2.1, 6, 6)]) == Start("quorum")


def test_a_quiet_neighbour_beside_ahead_ones_holds_a_round_only_until_it_is_late() -> None:
    pacer = RoundPacer(CFG)
    pacer.begin_wait(2.0, last_mix=1.5, mixed={"a": 80, "q": 3}, next_round=6)
    views = [view("a", 1.0, 80, 80), view("q", 1.0, 3, 3)]  # q: behind us, silent since 1.0
    assert pacer.decide(2.0, views) == Wait(2.5)  # recheck; q turns late at 11.0 (10 s after 1.0)
    assert pacer.decide(11.0, views) == Wait(11.5)  # q is late only after 11.0 (late_after: 10 s)
    assert pacer.decide(11.01, views) == Start("ahead")


def test_an_old_peer_without_rounds_is_waited_for_as_before() -> None:
    pacer = RoundPacer(CFG)
    pacer.begin_wait(2.0, last_mix=1.5, mixed={"a": 80}, next_round=78)
    assert pacer.decide(2.0, [view("a", 1.0, 80, None)]) == Wait(2.5)
    assert pacer.decide(12.0, [view("a", 1.0, 80, None)]) == Start("timeout")


def test_with_wait_before_mix_a_version_of_the_round_we_mix_is_in_step() -> None:
    """Ahead starts a round later: our wait sits after our own training of ``next_round``."""
    pacer = RoundPacer(PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0, wait_before_mix=True))
    pacer.begin_wait(2.0, last_mix=1.5, mixed={"a": 6}, next_round=6)
    assert isinstance(pacer.decide(2.0, [view("a", 1.0, 6, 6)]), Wait)
    pacer.begin_wait(2.0, last_mix=1.5, mixed={"a": 7}, next_round=6)
    assert pacer.decide(2.0, [view("a", 1.0, 7, 7)]) == Start("ahead")


def test_no_snapshot_is_pulled_from_a_neighbour_ahead() -> None:
    pacer = RoundPacer(PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0, wait_before_mix=True))
    pacer.begin_wait(2.0, last_mix=1.5, mixed={"a": 80, "s": 5}, next_round=6)
    assert pacer.pull_due(7.0, [view("a", 1.0, 80, 80), view("s", 1.4, 5, 5)]) == ["s"]


# ------------------------------------------------------------------------ a laggard, on a fake clock

TRAIN_S = 0.1
DT = 0.01


@dataclass
class SimPeer:
    name: str
    start_at: float
    #: rounds done, versions published (seq), when the last one was published
    round: int = 0
    seq: int = 0
    published: float | None = None
    pacer: RoundPacer = field(default_factory=lambda: RoundPacer(OLD_ORDER))
    training_until: float | None = None
    last_mix: float = -math.inf
    held: dict[str, int] = field(default_factory=dict)
    finished_at: float | None = None


def run_rounds(rounds: int, late_start: float, seconds: float = 120.0) -> dict[str, float]:
    """Four fully connected peers run ``rounds`` rounds each (the old order, ``wait_before_mix = false``:
    wait, train, publish and mix), then only serve (publish nothing more); peer ``l`` starts
    ``late_start`` after the others. Returns when each finished (fake clock)."""
    peers = [SimPeer(n, late_start if n == "l" else 0.0) for n in ("a", "b", "c", "l")]
    for k in range(int(seconds / DT)):  # bounded: one pass per DT of fake time
        now = k * DT
        for p in peers:
            if p.finished_at is not None or now < p.start_at:
                continue
            if p.training_until is not None:
                if now >= p.training_until:  # publish and mix, then wait for the next round
                    p.training_until, p.round, p.seq, p.published = None, p.round + 1, p.seq + 1, now
                    p.last_mix = now
                    p.held = {q.name: q.seq for q in peers if q is not p and q.seq}
                    if p.round == rounds:
                        p.finished_at = now
                    else:
                        p.pacer.begin_wait(now, p.last_mix, TRAIN_S, p.held, next_round=p.round + 1)
                continue
            views = [
                NeighbourView(q.name, 0.0, True, q.published, False, q.seq or None, q.round or None)
                for q in peers
                if q is not p and now >= q.start_at
            ]
            if p.round == 0 or isinstance(p.pacer.decide(now, views), Start):  # round 1: no wait
                p.training_until = now + TRAIN_S
        if all(p.finished_at is not None for p in peers):
            break
    return {p.name: math.inf if p.finished_at is None else p.finished_at for p in peers}


def test_a_late_peer_finishes_soon_after_its_neighbours_stop_publishing() -> None:
    """Regression: the late peer stayed some rounds behind (each of its waits ended on its neighbours'
    next version), and once they finished each of its remaining rounds waited ``max_round_wait_s``
    (old rule here: it finished 30.4 s after the others, three rounds behind). Now it catches up while
    they publish (here: 0.1 s after them)."""
    finished = run_rounds(rounds=20, late_start=1.0)
    others = max(finished[n] for n in ("a", "b", "c"))
    assert finished["l"] - others < OLD_ORDER.max_round_wait_s, finished


# ------------------------------------------------------------- the round reaches a peer that joins


def _engine(i: int) -> GossipEngine:
    zeros = {"w": np.zeros(3, np.float32)}
    return GossipEngine(Identity(bytes([i]) * 32), ProtocolConfig(network_id="t", join_quorum=1), zeros)


def test_a_snapshot_carries_the_round_of_the_version_it_holds() -> None:
    """Regression: snapshots carried no meta, so a peer that resumed among finished neighbours (its replicas
    from join snapshots) saw no round and waited ``max_round_wait_s`` per round (measured on the churn
    scenario with ``after_rounds = "serve"``: one peer 11 rounds at 5 s each)."""
    finished, joiner = _engine(1), _engine(2)
    finished.finish_round({"w": np.ones(3, np.float32)}, 1.0, meta=Meta(round=20))
    assert 1 == joiner.join_from_snapshots({finished.peer_id: finished.serve_snapshot(0)}, 2.0)
    assert 20 == joiner.replicas[finished.peer_id].meta.round
    restarted = _engine(1)
    restarted.restore(finished.own_params(), finished.public_params(), finished.seq, Meta(round=20))
    assert open_envelope(restarted.serve_snapshot(0)).header.meta.round == 20


def test_a_liar_claiming_a_high_round_does_not_cut_the_wait_for_a_slow_honest_neighbour() -> None:
    """Review of the ahead rule: the adaptive ``late_after`` follows our own pace (0.1 s rounds here, so
    about ``min_late_s``); a neighbour claiming round 2**63 must not start our round as soon as the honest
    one is merely slower than that. It may only once the honest one has been silent ``max_round_wait_s``."""
    pacer = RoundPacer(CFG)
    pacer.begin_wait(2.0, last_mix=1.5, work_s=0.1, mixed={"liar": 4, "h": 5}, next_round=6)
    views = [view("liar", 1.0, 4, 2**63), view("h", 1.0, 5, 5)]
    for t in (2.0, 4.0, 8.0, 10.99):
        assert isinstance(pacer.decide(t, views), Wait), t
    assert pacer.decide(11.01, views) == Start("ahead")  # h silent for 10 s: before the 12.0 deadline


WBM = PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0, wait_before_mix=True)


def test_with_wait_before_mix_late_in_step_neighbours_do_not_hold_the_mix_to_the_deadline() -> None:
    """The hub of a star in its last round ("Nothing to wait for"): its leaves wait only for it, so they run
    a round ahead; we hold their version of the round we mix and they finished. Once they are late the mix
    starts (it waited until the 12.0 deadline); a neighbour not in step holds it until silent for
    ``max_round_wait_s``, the ahead rule's bound."""
    pacer = RoundPacer(WBM)
    pacer.begin_wait(2.0, last_mix=1.95, work_s=0.1, mixed={"a": 6, "b": 6}, next_round=6)
    views = [view("a", 1.9, 6, 6), view("b", 1.9, 6, 6)]  # late 0.6 s after 1.9 (3 x 2 x our 0.1 s)
    assert isinstance(pacer.decide(2.0, views), Wait)
    assert pacer.decide(2.6, views) == Start("in_step")

    pacer.begin_wait(2.0, last_mix=1.95, work_s=0.1, mixed={"a": 6, "q": 5}, next_round=6)
    views = [view("a", 1.9, 6, 6), view("q", 1.9, 5, 5)]  # q: its version of this round is still to come
    for t in (2.6, 6.0, 11.9):
        assert isinstance(pacer.decide(t, views), Wait), t
    assert pacer.decide(11.91, views) == Start("in_step")


def test_with_wait_before_mix_a_fresh_peer_alone_mixes_its_first_round_at_once() -> None:
    """As the old order's first round never waits (the start gate waited for neighbours): a peer started
    alone waited ``max_round_wait_s`` before mixing nothing. A resumed peer alone waits, as it did."""
    pacer = RoundPacer(WBM)
    pacer.begin_wait(0.0, last_mix=-math.inf, next_round=1)
    assert pacer.decide(0.0, []) == Start("alone")
    unsubscribed = NeighbourView("r", -20.0, False, None)  # e.g. another network's peer
    assert pacer.decide(0.0, [unsubscribed]) == Start("alone")
    assert isinstance(pacer.decide(0.0, [view("a", None, None, None)]), Wait)  # its first version is due
    pacer.begin_wait(0.0, last_mix=-math.inf, next_round=5)
    assert pacer.decide(0.0, []) == Wait(0.5)


def test_with_wait_before_mix_a_peer_that_may_learn_alone_never_waits_for_nobody() -> None:
    """``min_neighbours = 0``, no learner connected nor subscribing: every mix starts at once (a host
    stepping a lone peer waited ``max_round_wait_s`` per step). A peer that needs neighbours and lost them
    waits out the bound for one to come back; one still subscribing, or a learner, is waited for."""
    lone = RoundPacer(
        PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0, wait_before_mix=True, min_neighbours=0)
    )
    lone.begin_wait(5.0, last_mix=4.0, work_s=0.5, mixed={}, next_round=7)
    assert lone.decide(5.0, []) == Start("alone")
    registry = NeighbourView("r", -20.0, False, None)  # connected long ago, never subscribed
    assert lone.decide(5.0, [registry]) == Start("alone")
    young = NeighbourView("y", 4.9, False, None)  # may still subscribe
    assert isinstance(lone.decide(5.0, [young]), Wait)
    assert isinstance(lone.decide(5.0, [view("a", 3.0, 6, 6)]), Wait)  # a learner whose version is due

    needs = RoundPacer(WBM)  # min_neighbours = 1
    needs.begin_wait(5.0, last_mix=4.0, work_s=0.5, mixed={}, next_round=7)
    assert isinstance(needs.decide(5.0, []), Wait)
    assert needs.decide(15.0, []) == Start("timeout")
