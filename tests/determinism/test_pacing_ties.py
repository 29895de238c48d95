"""A version that arrives after our mix at the same clock reading is new (p2pfl.protocol.pacing.is_new).

On a clock that does not move between a mix and the next arrival (a MockClock with the peers' work inline,
a coarse OS clock) the time alone called every reply to the mix old: in lock step every pacing wait ran to
``max_round_wait_s`` (measured, 48 peers on a MockClock: 190 of 190 waits ended by timeout)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from p2pfl.protocol import Start, Wait
from p2pfl.protocol.pacing import NeighbourView, PacingConfig, RoundPacer
from p2pfl.sim.data import peer_splits
from p2pfl.transport.memory import MemoryNetwork
from tests.test_peer import memory_peers

CFG = PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0)


def view(peer: str, update: float, seq: int) -> NeighbourView:
    return NeighbourView(peer, 0.0, True, update, False, seq)


def test_a_reply_at_the_mix_s_clock_reading_ends_the_wait() -> None:
    """We mixed at t=5 holding b@1 and c@1; both replied at t=5 too: new, the wait ends at once. Only the
    version held at the mix is old at that reading."""
    pacer = RoundPacer(CFG)
    pacer.begin_wait(5.0, 5.0, mixed={"b": 1, "c": 1})
    assert pacer.decide(5.0, [view("b", 5.0, 2), view("c", 5.0, 2)]) == Start("quorum")
    pacer.begin_wait(5.0, 5.0, mixed={"b": 1, "c": 1})
    assert pacer.decide(5.0, [view("b", 5.0, 2), view("c", 5.0, 1)]) == Wait(5.5)


def test_wait_before_mix_pulls_only_the_neighbour_whose_reply_is_missing() -> None:
    """Halfway through the wait the pacer asks for snapshots of the neighbours with nothing new: c, still
    at the version we mixed, and not b, whose reply came at the mix's clock reading."""
    pacer = RoundPacer(PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0, wait_before_mix=True))
    pacer.begin_wait(5.0, 5.0, mixed={"b": 1, "c": 1})
    assert pacer.pull_due(10.0, [view("b", 5.0, 2), view("c", 5.0, 1)]) == ["c"]


def test_a_neighbour_met_after_the_mix_at_its_reading_is_new() -> None:
    """No replica of c when we mixed (not in ``mixed``): its first version at the mix's reading is new.
    Without ``mixed`` (a caller that does not know) the old rule holds: later on the clock only."""
    pacer = RoundPacer(CFG)
    pacer.begin_wait(5.0, 5.0, mixed={"b": 1})
    assert pacer.decide(5.0, [view("b", 5.0, 2), view("c", 5.0, 0)]) == Start("quorum")
    pacer.begin_wait(5.0, 5.0)
    assert isinstance(pacer.decide(5.0, [view("b", 5.0, 2), view("c", 5.0, 0)]), Wait)
    assert pacer.decide(5.1, [view("b", 5.1, 2), view("c", 5.1, 0)]) == Start("quorum")


def test_work_that_took_no_clock_time_paces_the_wait() -> None:
    """A round's work of 0 s on the clock is a measurement (faster than the clock's resolution), not a
    missing one: the pace is then the floor ``min_late_s``, and a finished neighbour whose version of the
    round we are about to mix we already held at our last mix (in step, so awaited) holds the mix that
    long, not ``max_round_wait_s``. The case of the lock-step test below: a finished at round 4, b new."""
    cfg = PacingConfig(max_round_wait_s=30.0, min_late_s=0.5, wait_before_mix=True)
    pacer = RoundPacer(cfg)
    pacer.begin_wait(0.0, 0.0, work_s=0.0, mixed={"a": 4, "b": 3}, next_round=4)
    finished, new = (
        NeighbourView("a", 0.0, True, 0.0, False, 4, 4),
        NeighbourView("b", 0.0, True, 0.0, False, 4, 4),
    )
    assert pacer.decide(0.0, [finished, new]) == Wait(0.5)
    assert isinstance(pacer.decide(0.5, [finished, new]), Wait)  # late only once older than 0.5 s
    assert pacer.decide(0.6, [finished, new]) == Start("quorum")


async def _no_time(fn: Any, *args: Any) -> Any:
    """The peers' blocking work, inline and taking no mock time (the memory engine on a mock clock)."""
    return fn(*args)


@pytest.mark.parametrize("wait_before_mix", [False, True], ids=["old-order", "same-round"])
async def test_peers_in_lock_step_on_a_mock_clock_never_wait_out_a_round(
    autojump_clock: trio.testing.MockClock, wait_before_mix: bool
) -> None:
    """Liveness: three peers on a complete graph whose work takes no time (all in step, every reply at the
    mix's clock reading) run 4 rounds by quorum, not by waiting ``max_round_wait_s`` for each. With
    ``wait_before_mix`` one peer may run a round ahead (its first mix takes the others' joined version 0)
    and finish first; its neighbours' last mix must not wait 30 s for its next version (the test above)."""
    splits = peer_splits("digits", 3, partition_kind="iid", seed=5)
    cfg: dict[str, Any] = {"local_steps": 2, "max_round_wait_s": 30, "wait_before_mix": wait_before_mix}
    async with memory_peers(3, splits, MemoryNetwork(), run_sync=_no_time, **cfg) as peers:
        t0 = trio.current_time()
        with trio.fail_after(600):
            async with trio.open_nursery() as n:
                for p in peers:
                    n.start_soon(p.run, 4)
        assert all(p.round == 4 for p in peers)
        assert trio.current_time() - t0 < 30  # (each of 3 waits ran to 30 s before)
        assert all(r.mixed == 2 for p in peers for r in p.reports[1:])
