"""A finished simulated peer that only serves or responds ([run] after_rounds) still readmits expired
evictions, as ``p2pfl peer``'s serve loop does (p2pfl/peer_serve.py): a fake peer, trio's mock clock."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import trio
import trio.testing

from p2pfl.protocol import Action, Readmit
from p2pfl.sim.runner import PeerRunner
from tests.protocol.test_solo_hold import BAN_S, _evicted_neighbour


def test_a_serving_finished_peer_readmits_an_expired_eviction() -> None:
    victim, _, bad = _evicted_neighbour()
    executed: list[Action] = []

    async def execute(actions: Sequence[Action]) -> None:
        executed.extend(actions)

    peer: Any = SimpleNamespace(engine=victim, exchange=SimpleNamespace(execute=execute))

    async def main() -> None:
        for _ in range(int(2 * BAN_S / 0.05)):  # bounded: twice the ban, one poll at a time
            await PeerRunner._serve_a_while(None, peer)  # type: ignore[arg-type]
            if not victim.is_evicted(bad.peer_id):
                return

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert not victim.is_evicted(bad.peer_id)
    assert [a.peer for a in executed if isinstance(a, Readmit)] == [bad.peer_id]  # (the transport unblocks)
