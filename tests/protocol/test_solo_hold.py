"""A paused solo peer whose only neighbour is evicted must still readmit it when its ban expires: otherwise
the neighbour's versions are refused for ever, no version wakes the peer, and it never runs a round again
(p2pfl/peer_solo.py). A fake loop and trio's mock clock: no network, no training."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import trio
import trio.testing

from p2pfl.aggregation import AggregationConfig
from p2pfl.identity import Identity
from p2pfl.peer_solo import SoloWatch
from p2pfl.protocol import Action, GossipEngine, ProtocolConfig, RequestSnapshot
from p2pfl.protocol.mixing import MixLedger
from p2pfl.scoring import ScoringConfig
from tests.protocol.test_churn import _evict, _publish, _seed
from tests.protocol.test_engine import model

BAN_S = 60.0


def _engine(seed: bytes, *, scoring: bool = True) -> GossipEngine:
    return GossipEngine(
        Identity(seed),
        ProtocolConfig(network_id="t", max_staleness_s=10.0, readmit_after_s=BAN_S),
        model(),
        aggregation=AggregationConfig(rule="mean", nnm=False, self_clip_scale=None),
        scoring=ScoringConfig(evict_after=2),
        scoring_enabled=scoring,
    )


def _evicted_neighbour() -> tuple[GossipEngine, list[GossipEngine], GossipEngine]:
    """A victim, two honest neighbours and one that sent absurd models until the victim evicted it."""
    victim = _engine(_seed(1))
    honest = [_engine(_seed(2 + j), scoring=False) for j in range(2)]
    bad = _engine(_seed(50), scoring=False)
    _evict(victim, honest, bad)  # the neighbour sends absurd models until it is evicted
    assert victim.is_evicted(bad.peer_id)
    return victim, honest, bad


def test_a_paused_peer_readmits_its_evicted_neighbour_and_wakes_for_its_next_version() -> None:
    victim, honest, bad = _evicted_neighbour()
    for e in honest:  # the others leave: the victim has one neighbour, evicted
        victim.replicas.pop(e.peer_id, None)
    executed: list[Action] = []

    async def execute(actions: Sequence[Action]) -> None:
        executed.extend(actions)

    loop: Any = SimpleNamespace(
        _p=SimpleNamespace(stopped=trio.Event(), engine=victim, exchange=SimpleNamespace(execute=execute)),
        _replica_updated=trio.Event(),
        _held_at_mix={},
        _ledger=MixLedger(),
        _views=lambda _now: [],  # (renewals: tests/protocol/test_renewals.py)
    )
    watch = SoloWatch(pause_after=1)
    watch.tracker.observe(0)
    assert watch.tracker.paused
    held = []

    async def neighbour() -> None:
        """The evicted neighbour keeps publishing a (now sane) version every few seconds."""
        while True:
            await trio.sleep(5.0)
            now = trio.current_time()
            for act in victim.handle_announce(_publish(bad, now, 0.01), bad.peer_id, now):
                if isinstance(act, RequestSnapshot):  # (its replica went with its eviction)
                    victim.handle_snapshot(bad.serve_snapshot(int(now * 1000)), bad.peer_id, now)
            loop._replica_updated.set()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(neighbour)
            with trio.move_on_after(10 * BAN_S):
                await watch.hold(loop)
                held.append(trio.current_time())
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert not victim.is_evicted(bad.peer_id)  # readmitted while paused, as a round would have
    assert held and held[0] < 2 * BAN_S + 10  # its next version woke the peer
