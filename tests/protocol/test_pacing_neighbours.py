"""Pacing that no single neighbour controls: a slow, silent or flooding neighbour cannot set the honest
peers' pace (fake clock: a small discrete-time model of peers that wait, train and publish)."""

from __future__ import annotations

import math

import pytest

from p2pfl.protocol import Start
from p2pfl.protocol.pacing import NeighbourView, PacingConfig, RoundPacer, fresh_neighbours
from p2pfl.protocol.periods import PeriodTracker

TRAIN_S = 0.3
DT = 0.01


def view(peer: str, update: float | None, seq: int | None) -> NeighbourView:
    return NeighbourView(peer, 0.0, True, update, False, seq)


def test_periods_come_from_the_versions_applied() -> None:
    t = PeriodTracker()
    for k in range(1, 6):
        t.observe([view("a", 0.5 * k, k), view("s", 9.0 * k, k)])
    assert (0.5, 9.0) == (t.period("a"), t.period("s"))
    t.observe([view("a", 10.0, 20)])  # versions missed meanwhile: the interval is spread over them
    assert 0.5 == t.period("a")
    cfg = PacingConfig(period_factor=2.0, min_late_s=0.5, max_round_wait_s=10.0, work_factor=2.0)
    assert 1.0 == t.late_after([view("a", 1.0, 1), view("s", 1.0, 1)], cfg)  # lower median: 0.5
    assert 0.8 == t.late_after([view("a", 1.0, 1)], cfg, work_s=0.2)  # own work 0.2 s: pace 0.4
    assert 10.0 == PeriodTracker().late_after([view("a", 1.0, 1)], cfg)  # nothing known: the old rule
    # own work under the clock's resolution (0 s, a MockClock with inline work): measured, the floor
    assert 0.5 == PeriodTracker().late_after([view("a", 1.0, 1)], cfg, work_s=0.0)


def test_a_period_is_the_median_of_the_last_five_intervals_as_they_change() -> None:
    """The tracker keeps each median rather than recomputing it on every wait pass: it must follow the
    window (five intervals), not the first samples, and ignore a repeated view of the same version."""
    t, at = PeriodTracker(), 0.0
    for k, gap in enumerate([1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0], start=1):
        at += gap
        t.observe([view("a", at, k)])
        t.observe([view("a", at, k)])  # the next pass sees the same version: no interval
    assert 5.0 == t.period("a")  # window [1, 5, 5, 5, 5]
    for k in (8, 9, 10):
        at += 0.25
        t.observe([view("a", at, k)])
    assert 0.25 == t.period("a")  # [5, 5, 0.25, 0.25, 0.25]
    assert t.period("b") is None


def test_a_late_neighbour_is_not_waited_for_even_with_wait_fraction_one() -> None:
    cfg = PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0)
    assert (2, 3, 3) == fresh_neighbours(
        20.0, [view("a", 19.8, 1), view("b", 19.9, 1), view("s", 18.5, 1)], 19.5, cfg
    )
    assert (2, 2, 3) == fresh_neighbours(
        20.0, [view("a", 19.8, 1), view("b", 19.9, 1), view("s", 18.5, 1)], 19.5, cfg, late_after=1.0
    )


def simulate(*, honest: int, extra: str | None, cfg: PacingConfig, seconds: float = 60.0) -> float:
    """Mean seconds per round of the honest peers, fully connected. ``extra``: a neighbour that publishes
    every 9 s (``slow``), every 10 ms (``flood``) or never (``silent``)."""
    names = [f"h{i}" for i in range(honest)]
    peers = {
        n: {"seq": 0, "published": None, "ready": 0.0, "training_until": None, "rounds": 0, "started": 0.0}
        for n in names
    }
    pacers = {n: RoundPacer(cfg) for n in names}
    last_mix = dict.fromkeys(names, -math.inf)
    for n in names:
        pacers[n].begin_wait(0.0, last_mix[n])
    extra_seq, extra_at = 0, None
    steps = int(seconds / DT)
    for k in range(steps):  # bounded: one pass per DT of fake time
        now = k * DT
        if (extra == "slow" and now >= (extra_seq + 1) * 9.0 - 1e-9) or extra == "flood":
            extra_seq, extra_at = extra_seq + 1, now
        for i, n in enumerate(names):
            p = peers[n]
            if p["training_until"] is not None:
                if now >= p["training_until"]:  # publish, mix, start waiting for the next round
                    p["training_until"] = None
                    p["seq"] += 1
                    p["published"] = now
                    p["rounds"] += 1
                    last_mix[n] = now
                    pacers[n].begin_wait(now, last_mix[n], work_s=now - p["started"])
                continue
            views = [view(m, peers[m]["published"], peers[m]["seq"] or None) for m in names if m != n]
            if extra is not None:
                views.append(view("x", extra_at, extra_seq or None))
            if p["rounds"] == 0 or isinstance(pacers[n].decide(now, views), Start):  # round 1: no wait
                p["training_until"] = now + TRAIN_S * (1 + 0.05 * i)
                p["started"] = now
    return seconds / (sum(p["rounds"] for p in peers.values()) / honest)


@pytest.mark.parametrize("extra", ["slow", "flood", "silent"])
def test_one_neighbour_cannot_slow_the_honest_rounds(extra: str) -> None:
    cfg = PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0)  # the strictest quorum: wait for all
    base = simulate(honest=4, extra=None, cfg=cfg)
    with_it = simulate(honest=4, extra=extra, cfg=cfg)
    assert with_it <= 1.5 * base, (extra, base, with_it)


def test_two_peers_and_a_slow_one() -> None:
    """The smallest neighbourhood: one honest neighbour and the slow one."""
    cfg = PacingConfig()
    base = simulate(honest=2, extra=None, cfg=cfg)
    assert simulate(honest=2, extra="slow", cfg=cfg) <= 1.5 * base


def _mix_wait(pacer: RoundPacer, times: list[float], arrivals: dict[str, tuple[float, float]]) -> float:
    """Step ``pacer`` over ``times`` (fake clock); neighbour ``n``'s last version (seq 1) came at
    ``arrivals[n][0]``, its next one (seq 2) arrives at ``arrivals[n][1]``. Returns when the wait ended."""
    for now in times:  # bounded: one decision per listed instant
        views = [
            view(n, at if now >= at else prev, 2 if now >= at else 1) for n, (prev, at) in arrivals.items()
        ]
        if isinstance(pacer.decide(now, views), Start):
            return now
    raise AssertionError("the wait never ended")


PREV = 0.2


def test_a_neighbour_that_kept_pace_is_waited_for_from_the_start_of_the_wait() -> None:
    """Regression (wait_before_mix on a loaded machine): a neighbour's lateness counted from its previous
    round's version, so a neighbour in step with us but 0.55 s behind our publish was taken for late and
    mixed one round stale, round after round. It is now late only ``late_after`` after our wait began."""
    cfg = PacingConfig(
        wait_fraction=1.0, wait_before_mix=True, max_round_wait_s=10.0, period_factor=3.0, work_factor=2.0
    )
    pacer = RoundPacer(cfg)
    # round 1's mix: both neighbours' first versions arrive at 0.2 (they kept pace)
    pacer.begin_wait(0.0, -math.inf)
    assert isinstance(pacer.decide(0.2, [view("a", PREV, 1), view("b", PREV, 1)]), Start)
    # round 2: our work took 0.1 s, so late_after = max(0.5, 3 * 2 * 0.1) = 0.6 s; we published at 0.3
    pacer.begin_wait(0.3, 0.2, work_s=0.1)
    times = [round(0.3 + 0.01 * k, 2) for k in range(200)]
    ended = _mix_wait(pacer, times, {"a": (PREV, 0.75), "b": (PREV, 0.85)})
    assert ended == 0.85  # waited for b (old rule: started at 0.80, b's version of round 1 0.6 s old)


def test_a_neighbour_that_did_not_keep_pace_gets_no_grace() -> None:
    """The attacker's side: a slow neighbour (stale in our last mix) is late by its last version's age, as
    before, so it cannot hold up a round by having been waited for once."""
    cfg = PacingConfig(
        wait_fraction=1.0, wait_before_mix=True, max_round_wait_s=10.0, period_factor=3.0, work_factor=2.0
    )
    pacer = RoundPacer(cfg)
    pacer.begin_wait(0.0, 0.05)
    # a mix that timed out: a was fresh, b's only version is from before the last mix
    assert isinstance(pacer.decide(10.0, [view("a", PREV, 1), view("b", 0.0, 1)]), Start)
    assert pacer.kept_pace == frozenset({"a"})
    pacer.begin_wait(10.3, 10.2, work_s=0.1)
    times = [round(10.3 + 0.01 * k, 2) for k in range(200)]
    # a arrives at 10.75; b (last version 10 s old) is late at once: not waited for
    assert _mix_wait(pacer, times, {"a": (10.2, 10.75), "b": (0.0, 15.0)}) == 10.75
