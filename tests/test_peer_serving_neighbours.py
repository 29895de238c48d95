"""A peer restarted among neighbours that finished their rounds and only serve (``p2pfl peer`` after
``rounds``): real peers on the memory transport and trio's mock clock (training inline, so times are exact).

Regressions (p2pfl.protocol.snapshots ``renewals``, p2pfl.protocol.solo): the restarted peer held no replica
of them (no join) or replicas from its join that went stale ``max_staleness_s`` later, since finished peers
publish nothing more; every round was solo, it paused after ``solo_rounds`` and waited for a version that
never came, for ever, while both neighbours were connected and served their models. Without a join its
first round also waited ``max_round_wait_s`` for their first versions."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pfl.peer import Peer
from p2pfl.sim.data import peer_splits
from p2pfl.transport.memory import MemoryNetwork
from p2pfl.wire import open_envelope

from .test_peer import inline, learner_for, memory_peer

WAIT_S = 30.0


@pytest.mark.parametrize(("join", "wait_before_mix"), [(False, False), (True, False), (False, True)])
async def test_a_restarted_peer_mixes_its_serving_neighbours_in_every_round(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, join: bool, wait_before_mix: bool
) -> None:
    splits = peer_splits("digits", 3, partition_kind="iid", seed=3)
    rounds = 7 if wait_before_mix else 8
    net = MemoryNetwork()
    cfg = {
        "local_steps": 2,
        "run_sync": inline,
        "max_round_wait_s": WAIT_S,
        "max_staleness_s": 3.0,  # stale within the restarted peer's rounds, 2 s apart
        "solo_rounds": 2,
        "round_interval_s": 2.0,
        "wait_before_mix": wait_before_mix,
    }

    def restartable() -> Peer:
        return memory_peer(
            2, learner_for(splits[2], 2), net, state_dir=tmp_path / "c", join_on_start=join, **cfg
        )

    with trio.fail_after(1000):
        async with AsyncExitStack() as stack:
            a, b = [
                await stack.enter_async_context(memory_peer(i, learner_for(splits[i], i), net, **cfg))
                for i in range(2)
            ]
            await a.connect(f"memory/{b.peer_id}")
            async with restartable() as c:
                for other in (a, b):
                    await c.connect(f"memory/{other.peer_id}")
                async with trio.open_nursery() as n:
                    for p in (a, b, c):
                        n.start_soon(p.run, 2)
            async with trio.open_nursery() as n:  # c is down; a and b finish their rounds, then serve
                for p in (a, b):
                    n.start_soon(p.run, 8)
            assert (a.round, b.round) == (10, 10)
            async with trio.open_nursery() as serving:
                serving.start_soon(a.serve)
                serving.start_soon(b.serve)
                async with restartable() as c2:
                    assert c2.round == 2
                    for other in (a, b):
                        await c2.connect(f"memory/{other.peer_id}")
                    t0 = trio.current_time()
                    # up to the round its neighbours finished at; with wait_before_mix one less: their
                    # version of the round we mix is in step (p2pfl.protocol.pacing), so that round waits
                    # max_round_wait_s for their next one (left as is: docs/benchmarks.md, branch solo)
                    reports = await c2.run(rounds)
                    took = trio.current_time() - t0
                a.stop()
                b.stop()
    assert [r.mixed for r in reports] == [2] * rounds, [r.mixed for r in reports]
    assert took < WAIT_S, took  # no round waited max_round_wait_s for versions that never come


async def test_a_restored_peer_s_snapshot_reports_the_round_of_the_version_it_holds(tmp_path: Path) -> None:
    """Regression: the restored public version's meta was ``round = ckpt.round``, the rounds run, later than
    the version's own round when rounds ran without publishing (a spent privacy budget checkpoints its round
    but no version): neighbours joining from that snapshot took it for further ahead than it was."""
    splits = peer_splits("digits", 1, partition_kind="iid", seed=1)
    net = MemoryNetwork()
    cfg = {"local_steps": 2, "min_neighbours": 0, "max_round_wait_s": 0.1, "state_dir": tmp_path / "p"}
    async with memory_peer(0, learner_for(splits[0], 0), net, **cfg) as p:
        await p.run(2)
        meta = p.engine.public_meta
        p.store.checkpoint(p.engine, 7, {})  # rounds 3-7 published nothing
    assert meta.round == 2
    async with memory_peer(0, learner_for(splits[0], 0), net, **cfg) as restored:
        assert restored.round == 7
        assert open_envelope(restored.engine.serve_snapshot(0)).header.meta == meta
