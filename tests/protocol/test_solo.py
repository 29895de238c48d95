"""A solo peer (no neighbour's model in its mixes) is marked, pauses after ``solo_rounds`` solo rounds in a
row until a neighbour's version arrives, and mixes again when one does (p2pfl/protocol/solo.py)."""

from __future__ import annotations

import pytest
import trio

from p2pfl.errors import ConfigError
from p2pfl.peer import PeerConfig
from p2pfl.protocol.solo import SOLO_ROUNDS, SoloConfig, SoloTracker
from p2pfl.sim.data import peer_splits
from p2pfl.transport.memory import MemoryNetwork
from tests.test_peer import learner_for, memory_peer


def test_solo_rounds_are_counted_and_the_peer_pauses_after_the_limit() -> None:
    t = SoloTracker(SoloConfig(pause_after=3))
    assert t.observe(2) is None and t.rounds == 0
    assert t.observe(0) == "solo"  # the first solo round: one warning
    assert t.observe(0) is None and not t.paused
    assert t.observe(0) == "paused" and t.paused and t.rounds == 3
    assert t.observe(0) is None and t.paused  # (a round run for a neighbour's version that still mixed none)
    assert not t.may_run(False) and t.may_run(True)  # paused: only for a neighbour's new version
    assert t.observe(1) == "rejoined"
    assert (t.rounds, t.paused, t.total) == (0, False, 4)
    assert t.may_run(False)


def test_a_secure_aggregation_round_is_not_solo_and_zero_never_pauses() -> None:
    t = SoloTracker(SoloConfig(pause_after=0))
    assert t.observe(0, group_round=True) is None and t.rounds == 0
    for _ in range(50):
        t.observe(0)
    assert (t.rounds, t.paused) == (50, False)
    assert SoloTracker().cfg.pause_after == SOLO_ROUNDS


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_solo_rounds_must_be_a_count(bad: object) -> None:
    with pytest.raises(ConfigError, match="solo_rounds"):
        PeerConfig(network_id="digits", solo_rounds=bad)  # type: ignore[arg-type]


async def test_a_lone_peer_pauses_then_trains_again_once_a_neighbour_publishes() -> None:
    splits = peer_splits("digits", 2, partition_kind="iid", seed=1)
    net = MemoryNetwork()
    cfg = {"local_steps": 2, "max_round_wait_s": 0.05, "min_neighbours": 0, "solo_rounds": 2}
    async with memory_peer(0, learner_for(splits[0], 0), net, **cfg) as lone:
        with trio.move_on_after(3.0):
            await lone.run(6)  # 2 solo rounds, then paused: the other 4 never start
        assert lone.round == 2
        assert lone.status()["solo"] == {"rounds": 2, "total": 2, "paused": True}
        async with memory_peer(1, learner_for(splits[1], 1), net, **cfg) as other:
            await lone.connect(f"memory/{other.peer_id}")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other.run, 3)
                with trio.fail_after(30):
                    await lone.run(2)  # resumed by the neighbour's versions
                nursery.cancel_scope.cancel()
        assert lone.round == 4
        assert lone.reports[-1].mixed >= 1
        assert lone.status()["solo"]["paused"] is False
