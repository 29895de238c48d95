"""When a peer starts and paces its rounds: table tests of the pure rules, on a clock the test chooses."""

from __future__ import annotations

import math

import pytest

from p2pfl.protocol import Start, Wait
from p2pfl.protocol.pacing import (
    ConnectionClock,
    NeighbourView,
    PacingConfig,
    RoundPacer,
    StartGate,
    fresh_neighbours,
    learners,
    next_round_at,
    unsubscribed,
)

CFG = PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0, min_neighbours=2, start_timeout_s=60.0)


def view(
    peer: str, *, seen: float = 0.0, sub: bool = True, update: float | None = None, evicted: bool = False
) -> NeighbourView:
    return NeighbourView(peer, seen, sub, update, evicted)


# ------------------------------------------------------------------------------------- start gate

START_CASES = [
    # (now, connected, unsubscribed_young, decision): one gate per row, started at 0
    (0.0, 0, 0, Wait(0.1)),  # too few neighbours: look again in START_POLL_S
    (59.95, 1, 0, Wait(60.0)),  # never past the start timeout
    (60.0, 1, 0, Start("timeout")),  # timed out: start without the subscription wait
    (0.0, 2, 0, Start("ready")),  # enough neighbours, all subscribed
    (5.0, 3, 1, Wait(5.05)),  # enough, one still subscribing: look again in SUBSCRIBE_POLL_S
]


@pytest.mark.parametrize("case", START_CASES)
def test_start_gate(case: tuple[float, int, int, Wait | Start]) -> None:
    now, connected, young, expected = case
    assert StartGate(CFG, 0.0).decide(now, connected, young) == expected


def test_start_gate_waits_for_subscriptions_at_most_grace_plus_one_second() -> None:
    gate = StartGate(CFG, 0.0)
    assert gate.decide(1.0, 1, 0) == Wait(1.1)
    assert gate.decide(2.0, 2, 1) == Wait(2.05)  # neighbours are there at 2.0: subscriptions until 6.0
    assert gate.decide(5.99, 2, 1) == Wait(6.0)
    assert gate.decide(6.0, 2, 1) == Start("subscribe_timeout")
    late = StartGate(CFG, 0.0)
    late.decide(2.0, 2, 1)
    assert late.decide(3.0, 1, 0) == Start("ready")  # the neighbour count is not asked again


def test_only_subscribed_learners_count_towards_min_neighbours() -> None:
    # a peer of another network (or a registry) stays connected but never subscribes to our topic
    other_network = view("beta", sub=False)
    views = [other_network, view("alpha"), view("banned", evicted=True)]
    assert ["alpha"] == learners(views)
    gate = StartGate(CFG, 0.0)  # min_neighbours = 2
    assert gate.decide(30.0, len(learners(views)), 0) == Wait(30.1)  # never ready on a connection alone
    assert gate.decide(30.1, len(learners([*views, view("alpha2", seen=30.0)])), 0) == Start("ready")


def test_start_gate_without_neighbours_to_wait_for() -> None:
    alone = PacingConfig(min_neighbours=0, start_timeout_s=0.0)
    assert StartGate(alone, 0.0).decide(0.0, 0, 0) == Start("ready")
    assert StartGate(PacingConfig(min_neighbours=1, start_timeout_s=0.0), 0.0).decide(0.0, 0, 0) == Start(
        "timeout"
    )


UNSUBSCRIBED_CASES = [
    # (now, views, unsubscribed)
    (1.0, [view("a", sub=False)], ["a"]),  # connected 1 s ago, not subscribed yet
    (2.99, [view("a", sub=False)], ["a"]),
    (3.0, [view("a", sub=False)], []),  # grace over: taken for a non-learner (a registry)
    (1.0, [view("a", sub=True)], []),
    (4.0, [view("a", sub=False), view("b", seen=2.0, sub=False)], ["b"]),
]


@pytest.mark.parametrize("case", UNSUBSCRIBED_CASES)
def test_unsubscribed(case: tuple[float, list[NeighbourView], list[str]]) -> None:
    now, views, expected = case
    assert unsubscribed(now, views, CFG) == expected


def test_connection_clock_remembers_first_sight_and_forgets_disconnected_peers() -> None:
    clock = ConnectionClock()
    assert clock.observe(["a"], 1.0) == {"a": 1.0}
    assert clock.observe(["a", "b"], 2.0) == {"a": 1.0, "b": 2.0}
    assert clock.observe(["b"], 3.0) == {"b": 2.0}
    assert clock.observe(["a", "b"], 4.0) == {"a": 4.0, "b": 2.0}  # a reconnection is a new first sight


# ---------------------------------------------------------------------------------- round pacing

FRESH_CASES = [
    # (now, views, last_mix, (fresh, active, connected))
    (20.0, [], 15.0, (0, 0, 0)),
    (20.0, [view("a", update=16.0)], 15.0, (1, 1, 1)),  # updated since the last mix
    (20.0, [view("a", update=14.0)], 15.0, (0, 1, 1)),  # publishing, nothing new since the mix
    (20.0, [view("a", update=10.0)], 15.0, (0, 1, 1)),  # exactly max_round_wait_s ago: still publishing
    (20.0, [view("a", update=9.9)], 15.0, (0, 0, 1)),  # quiet: not waited for
    (20.0, [view("a", update=16.0, evicted=True)], 15.0, (0, 0, 0)),  # evicted: not even connected
    # a subscribed learner without a replica yet is expected while fewer than two neighbours publish
    (20.0, [view("a", update=16.0), view("n", seen=12.0)], 15.0, (1, 2, 2)),
    (20.0, [view("n", seen=12.0)], 15.0, (0, 1, 1)),
    (20.0, [view("n", seen=9.0)], 15.0, (0, 0, 1)),  # connected too long ago without a version
    (20.0, [view("n", seen=12.0, sub=False)], 15.0, (0, 0, 1)),  # never subscribed: not a learner
    (20.0, [view("q", seen=12.0, update=1.0)], 15.0, (0, 0, 1)),  # quiet with a replica: not pending
    # two publishing neighbours: a newcomer or a lurker no longer holds up the rounds
    (20.0, [view("a", update=16.0), view("b", update=16.0), view("n", seen=12.0)], 15.0, (2, 2, 3)),
]


@pytest.mark.parametrize("case", FRESH_CASES)
def test_fresh_neighbours(case: tuple[float, list[NeighbourView], float, tuple[int, int, int]]) -> None:
    now, views, last_mix, expected = case
    assert fresh_neighbours(now, views, last_mix, CFG) == expected


PACER_CASES = [
    # (wait_fraction, now, views, decision); the wait began at 10.0 (deadline 20.0), last mix at 9.0
    (1.0, 10.0, [], Wait(10.5)),  # nobody: wait the whole max_round_wait_s, looking every recheck_s
    (1.0, 19.8, [], Wait(20.0)),  # never past the deadline
    (1.0, 20.0, [], Start("timeout")),
    (1.0, 10.0, [view("a", update=9.5)], Start("quorum")),
    (1.0, 10.0, [view("a", update=9.5), view("b", update=8.0)], Wait(10.5)),  # 1 of 2
    (1.0, 10.0, [view("a", update=9.5), view("b", update=9.6)], Start("quorum")),
    (0.5, 10.0, [view("a", update=9.5), view("b", update=8.0), view("c", update=8.0)], Wait(10.5)),  # ceil
    (0.5, 10.0, [view("a", update=9.5), view("b", update=9.5), view("c", update=8.0)], Start("quorum")),
    (0.0, 10.0, [view("a", update=8.0)], Wait(10.5)),  # at least one fresh neighbour, whatever the fraction
    (0.0, 10.0, [view("a", update=9.5), view("b", update=8.0)], Start("quorum")),
    # a lone publishing neighbour is not mixed while another learner's first version is on its way
    (1.0, 10.0, [view("a", update=9.5), view("n", seen=5.0)], Wait(10.5)),
]


@pytest.mark.parametrize("case", PACER_CASES)
def test_round_pacer(case: tuple[float, float, list[NeighbourView], Wait | Start]) -> None:
    fraction, now, views, expected = case
    pacer = RoundPacer(PacingConfig(wait_fraction=fraction, max_round_wait_s=10.0))
    pacer.begin_wait(10.0, last_mix=9.0)
    assert pacer.decide(now, views) == expected


def test_a_stopped_peer_does_not_wait() -> None:
    pacer = RoundPacer(CFG)
    pacer.begin_wait(0.0, -math.inf)
    assert pacer.decide(0.0, [], stopped=True) == Start("stopped")


def test_rounds_start_round_interval_apart() -> None:
    assert next_round_at(5.0, PacingConfig(round_interval_s=2.0)) == 7.0
    assert next_round_at(5.0, PacingConfig()) == 5.0
