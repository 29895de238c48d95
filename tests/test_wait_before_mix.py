"""``wait_before_mix``: a round trains, publishes, waits for the neighbours' versions of the same round, then
mixes them, so on a complete graph with the mean rule every peer computes FedAvg's average."""

from __future__ import annotations

import math
from contextlib import AsyncExitStack
from typing import Any

import numpy as np
import trio

from p2pfl.aggregation import AggregationConfig
from p2pfl.identity import Identity
from p2pfl.peer import Peer
from p2pfl.protocol import GossipEngine, ProtocolConfig, Publish, Start, Wait
from p2pfl.protocol.pacing import NeighbourView, PacingConfig, RoundPacer, fresh_neighbours
from p2pfl.protocol.replicas import RoundOutcome
from p2pfl.sim.data import peer_splits
from p2pfl.transport.memory import MemoryNetwork

from .test_peer import inline, learner_for, link, memory_peer

FEDAVG = AggregationConfig(rule="mean", nnm=False, self_clip_scale=None)


def _view(peer: str, *, last: float | None, subscribed: bool = True) -> NeighbourView:
    # connected long ago: the others' start-up took longer than max_round_wait_s
    return NeighbourView(peer, first_seen=-100.0, subscribed=subscribed, last_update=last, seq=None)


def test_the_first_mix_waits_for_every_subscribed_learner_not_just_the_first_two() -> None:
    """Two neighbours published, three more are subscribed and still training: the old rule counts only
    the two (a quorum of 2/2), the first mix of ``wait_before_mix`` counts all five."""
    views = [_view("a", last=1.0), _view("b", last=1.2)] + [_view(p, last=None) for p in "cde"]
    cfg = PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0)
    assert fresh_neighbours(2.0, views, -math.inf, cfg) == (2, 2, 5)
    assert fresh_neighbours(2.0, views, -math.inf, cfg, await_pending=True) == (2, 5, 5)

    pacer = RoundPacer(PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0, wait_before_mix=True))
    pacer.begin_wait(2.0, -math.inf)
    assert type(pacer.decide(2.0, views)).__name__ == "Wait"
    later = [_view(p, last=2.5) for p in "abcde"]
    assert type(pacer.decide(3.0, later)).__name__ == "Start"
    # after the first mix the old rule holds: a lurker that never published holds nothing up
    pacer.begin_wait(4.0, 3.5)
    assert not pacer.await_pending


def test_with_the_quorum_in_the_mix_waits_a_little_for_the_neighbours_that_keep_pace() -> None:
    """Three of four in (a quorum at ``wait_fraction`` 0.75): the mix still waits up to ``settle_factor``
    times our last round's work for the fourth, which keeps pace, and starts when it comes; a fourth that
    does not come costs that bound, no more. The old order starts at the quorum (training follows)."""
    cfg = PacingConfig(wait_fraction=0.75, max_round_wait_s=10.0, wait_before_mix=True, settle_factor=0.5)
    three = [_view(p, last=10.2) for p in "abc"] + [_view("d", last=9.0)]  # d: in the last mix, not yet
    pacer = RoundPacer(cfg)
    pacer.begin_wait(10.0, last_mix=9.5, work_s=1.0)
    assert pacer.decide(10.2, three) == Wait(10.7)  # half of our 1 s of work
    four = [*three[:3], _view("d", last=10.4)]
    assert pacer.decide(10.4, four) == Start("quorum")  # all in: no need to wait the rest of it

    pacer.begin_wait(20.0, last_mix=19.5, work_s=1.0)
    late = [_view(p, last=20.2) for p in "abc"] + [_view("d", last=19.0)]
    assert pacer.decide(20.2, late) == Wait(20.7)
    assert pacer.decide(20.5, late) == Wait(20.7)  # the bound is set once, when the quorum came in
    assert pacer.decide(20.7, late) == Start("quorum")

    old = RoundPacer(PacingConfig(wait_fraction=0.75, max_round_wait_s=10.0, wait_before_mix=False))
    old.begin_wait(10.0, last_mix=9.5, work_s=1.0)
    assert old.decide(10.2, three) == Start("quorum")


def test_publish_trained_then_mix_publishes_once_and_mixes_the_trained_model() -> None:
    ident = Identity(b"\x07" * 32)
    engine = GossipEngine(
        ident, ProtocolConfig(network_id="t"), {"w": np.zeros(3, np.float32)}, aggregation=FEDAVG
    )
    trained = {"w": np.full(3, 2.0, np.float32)}
    publish = engine.publish_trained(trained)
    assert isinstance(publish, Publish) and publish.seq == 1 == engine.seq
    np.testing.assert_array_equal(engine.public_params()["w"], trained["w"])
    out = engine.finish_round(trained, 0.0, already_published=True)
    assert engine.seq == 1  # not published twice
    assert not any(isinstance(a, Publish) for a in out.actions)
    np.testing.assert_array_equal(engine.own_params()["w"], trained["w"])  # alone: the mix is itself


async def _lags(wait_before_mix: bool, n: int = 4, rounds: int = 3) -> list[list[int]]:
    """Run ``n`` peers on a complete graph for ``rounds`` rounds (MockClock, inline training); for each mix of
    each peer, own version minus each mixed neighbour version (0: the same round's model)."""
    splits = peer_splits("digits", n, partition_kind="iid", seed=5)
    net = MemoryNetwork()
    lags: list[list[int]] = []
    async with AsyncExitStack() as stack:
        peers: list[Peer] = []
        for i in range(n):
            peer = memory_peer(
                i,
                learner_for(splits[i], i),
                net,
                local_steps=5,
                wait_fraction=1.0,
                max_round_wait_s=30,
                min_neighbours=n - 1,
                join_on_start=False,
                scoring_enabled=False,
                aggregation=FEDAVG,
                wait_before_mix=wait_before_mix,
                run_sync=inline,
            )
            peers.append(await stack.enter_async_context(peer))
            finish = peer.engine.finish_round

            def recording(*args: Any, _finish: Any = finish, **kwargs: Any) -> RoundOutcome:
                out: RoundOutcome = _finish(*args, **kwargs)
                lags.append([out.seq - c.seq for c in out.contributions])
                return out

            peer.engine.finish_round = recording  # type: ignore[method-assign]
        for i, a in enumerate(peers):
            for b in peers[i + 1 :]:
                await link(a, b)
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for p in peers:
                    nursery.start_soon(p.run, rounds)
    return lags


async def test_every_mix_takes_all_neighbours_versions_of_the_same_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Regression (issue 17, accuracy parity): a round waited before training, so it mixed the neighbours'
    previous versions (round 1 mixed nothing at all). With ``wait_before_mix`` every mix of every peer
    takes all three neighbours' versions of its own round, FedAvg's inputs."""
    lags = await _lags(True)
    assert len(lags) == 4 * 3
    assert all(mix == [0, 0, 0] for mix in lags), lags


async def test_the_default_order_still_mixes_the_previous_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The default (wait before training) is unchanged: round 1 mixes no neighbour, later rounds mix
    versions one round old."""
    lags = await _lags(False)
    assert lags[:4] == [[], [], [], []]
    assert all(lag >= 1 for mix in lags[4:] for lag in mix)


def test_halfway_through_a_wait_the_round_pulls_the_versions_still_missing() -> None:
    pacer = RoundPacer(PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0, wait_before_mix=True))
    pacer.begin_wait(20.0, 15.0)
    views = [
        _view("fresh", last=17.0),
        _view("stale", last=12.0),
        _view("never", last=None),
        _view("lurker", last=None, subscribed=False),
        NeighbourView("banned", -100.0, True, 12.0, evicted=True),
    ]
    assert pacer.pull_due(24.9, views) == []
    assert pacer.pull_due(25.0, views) == ["stale", "never"]
    assert pacer.pull_due(26.0, views) == []  # once per wait
    old_order = RoundPacer(PacingConfig(wait_fraction=1.0, max_round_wait_s=10.0, wait_before_mix=False))
    old_order.begin_wait(20.0, 15.0)
    assert old_order.pull_due(30.0, views) == []


async def test_a_version_gossip_never_delivered_is_pulled_and_mixed_in_its_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Regression (issue 17, libp2p): some publishers' deltas never reached some peers, whose mixes then took
    replicas 1-5 rounds old. Here peer 0 hears nothing from peer 1 by gossip; every mix of peer 0 still
    takes a version of peer 1 no older than its own round, pulled as a snapshot (peers 1 and 2 run ahead
    meanwhile: the stalled peer 0 is late for their pace, and they do not wait for it)."""
    splits = peer_splits("digits", 3, partition_kind="iid", seed=5)
    net = MemoryNetwork()
    lags: list[list[int]] = []
    async with AsyncExitStack() as stack:
        peers: list[Peer] = []
        for i in range(3):
            peer = memory_peer(
                i,
                learner_for(splits[i], i),
                net,
                local_steps=5,
                wait_fraction=1.0,
                max_round_wait_s=10,
                min_neighbours=2,
                join_on_start=False,
                scoring_enabled=False,
                aggregation=FEDAVG,
                wait_before_mix=True,
                run_sync=inline,
            )
            peers.append(await stack.enter_async_context(peer))
        deaf, lost = peers[0], peers[1]
        announce = deaf.engine.handle_announce

        def lossy(data: bytes, via: str, now: float, **kwargs: Any) -> Any:
            return [] if via == lost.peer_id else announce(data, via, now, **kwargs)

        deaf.engine.handle_announce = lossy  # type: ignore[method-assign]
        finish = deaf.engine.finish_round

        def recording(*args: Any, **kwargs: Any) -> RoundOutcome:
            out: RoundOutcome = finish(*args, **kwargs)
            lags.append([out.seq - c.seq for c in out.contributions])
            return out

        deaf.engine.finish_round = recording  # type: ignore[method-assign]
        for i, a in enumerate(peers):
            for b in peers[i + 1 :]:
                await link(a, b)
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                for p in peers:
                    nursery.start_soon(p.run, 3)
    assert len(lags) == 3
    assert all(len(mix) == 2 and max(mix) <= 0 for mix in lags), lags
