"""``wait_before_mix`` on real peers (memory transport, MockClock): what the round's wait is paced by and
when it has nothing to wait for (p2pfl.protocol.pacing, "Nothing to wait for", the pace's work time)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from p2pfl.peer import Peer
from p2pfl.protocol.pacing import RoundPacer
from p2pfl.sim.data import peer_splits
from p2pfl.transport.memory import MemoryNetwork

from .test_peer import connect_all, inline, learner_for, memory_peer


def lone_peer(**cfg: Any) -> Peer:
    """A peer that may learn alone (``min_neighbours = 0``) on a network of its own, same-round order."""
    split = peer_splits("digits", 1, partition_kind="iid", seed=5)[0]
    return memory_peer(
        0,
        learner_for(split, 0),
        MemoryNetwork(),
        min_neighbours=0,
        max_round_wait_s=30,
        join_on_start=False,
        wait_before_mix=True,
        run_sync=inline,
        **cfg,
    )


async def b_five_seconds_late(a: Peer, b: Peer, rounds: int) -> None:
    """Both run ``rounds`` rounds, B starting 5 s after A."""

    async def late() -> None:
        await trio.sleep(5.0)
        await b.run(rounds)

    with trio.fail_after(120):
        async with trio.open_nursery() as n:
            n.start_soon(a.run, rounds)
            n.start_soon(late)


async def test_a_peer_started_alone_mixes_its_first_round_without_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``min_neighbours = 0``: the old order's first round trains and ends at once; the same-round order
    waited ``max_round_wait_s`` (30 s here) for neighbours that the start gate already gave up on."""
    async with lone_peer() as peer:
        t0 = trio.current_time()
        await peer.run(1)
        assert trio.current_time() - t0 < 1.0
        assert peer.reports[0].mixed == 0


async def test_the_pace_is_the_last_round_s_work_without_its_wait(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B starts 5 s after A, so A's first mix waits about 5 s for B's first version. The work time the
    next wait is paced by (``late_after``, the settle wait) is that round without the wait: it was the
    whole round, so one long wait made every later threshold as long."""
    works: list[tuple[int, float | None]] = []
    begin = RoundPacer.begin_wait

    def spy(
        self: RoundPacer, now: float, last_mix: float, work_s: float | None = None, *a: Any, **k: Any
    ) -> None:
        works.append((k.get("next_round", -1), work_s))
        begin(self, now, last_mix, work_s, *a, **k)

    monkeypatch.setattr(RoundPacer, "begin_wait", spy)
    splits = peer_splits("digits", 2, partition_kind="iid", seed=5)
    net = MemoryNetwork()
    cfg: dict[str, Any] = dict(
        max_round_wait_s=30, join_on_start=False, wait_before_mix=True, run_sync=inline
    )
    a = memory_peer(0, learner_for(splits[0], 0), net, local_steps=5, **cfg)
    b = memory_peer(1, learner_for(splits[1], 1), net, local_steps=5, **cfg)
    async with a, b:
        await connect_all([a, b])
        await b_five_seconds_late(a, b, 2)
    assert a.reports[0].duration_s > 4.0  # A's first round waited for B
    second = [w for r, w in works if r == 2]
    assert len(second) == 2 and all(w is not None and w < 1.0 for w in second), works


async def test_a_dp_peer_with_wait_before_mix_still_waits_for_its_neighbours(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A DP peer cannot publish before its mix (the release is decided with it), so it keeps the old order's
    wait before training; it waited nowhere, and ran its rounds while its neighbour had sent nothing."""
    from p2pfl.privacy import PrivacyConfig

    splits = peer_splits("digits", 2, partition_kind="iid", seed=5)
    net = MemoryNetwork()
    privacy = PrivacyConfig(mode="record", epsilon=50.0, noise_multiplier=1.0, clip_norm=1.0)
    cfg: dict[str, Any] = dict(
        max_round_wait_s=30, join_on_start=False, wait_before_mix=True, run_sync=inline
    )
    a = memory_peer(0, learner_for(splits[0], 0), net, local_steps=5, privacy=privacy, **cfg)
    b = memory_peer(1, learner_for(splits[1], 1), net, local_steps=5, **cfg)
    async with a, b:
        await connect_all([a, b])
        t0 = trio.current_time()
        with trio.fail_after(120):
            await a.run(2)  # b never runs: a's second round waits for its first version
        assert trio.current_time() - t0 >= 30


async def test_a_host_stepping_a_lone_peer_does_not_wait_in_any_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The same-round order's wait sits inside ``step()``: a peer that may learn alone (``min_neighbours
    = 0``) and has nobody connected mixes at once in every round, not only the first (it waited
    ``max_round_wait_s``, 30 s here, in each later step)."""
    async with lone_peer(solo_rounds=0) as peer:
        t0 = trio.current_time()
        for _ in range(4):
            await peer.step()
        assert trio.current_time() - t0 < 1.0
        assert [r.round for r in peer.reports] == [1, 2, 3, 4]


async def test_the_first_mix_waits_for_a_joined_neighbours_first_version_not_its_version_0(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A join seeds a replica of each neighbour at version 0 (its start model). The first mix took that for
    the neighbour's first version: fresh, a quorum at once, so A mixed B's start model and ran a round ahead
    of B. It waits for B's version of round 1 now (B starts its rounds 5 s after A)."""
    splits = peer_splits("digits", 2, partition_kind="iid", seed=5)
    net = MemoryNetwork()
    cfg: dict[str, Any] = dict(max_round_wait_s=30, wait_before_mix=True, run_sync=inline)
    a = memory_peer(0, learner_for(splits[0], 0), net, local_steps=5, **cfg)
    b = memory_peer(1, learner_for(splits[1], 1), net, local_steps=5, **cfg)
    mixed: list[int] = []
    async with a, b:
        await connect_all([a, b])
        finish = a.engine.finish_round

        def spy(*args: Any, **kwargs: Any) -> Any:
            mixed.extend(r.seq for r in kwargs["candidates"])
            return finish(*args, **kwargs)

        a.engine.finish_round = spy  # type: ignore[method-assign]
        await b_five_seconds_late(a, b, 1)
        assert a.engine.replicas[b.peer_id].seq >= 1
    assert a.reports[0].duration_s > 4.0  # it waited for B's first trained version
    assert mixed == [1], mixed  # and mixed that version, not B's start model
