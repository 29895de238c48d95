"""A peer that finished its rounds and only serves keeps forgetting idle identities (p2pfl/peer_serve.py):
before, forgetting ran only at the end of a round, so a serving peer kept every replica from then on."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

from p2pfl.peer_serve import serve_until_stopped
from p2pfl.protocol import Action, Publish, Readmit
from tests.protocol.test_engine import engine, train_step

STALE = 10.0


async def _serve_for(  # type: ignore[no-untyped-def]
    seconds: float, b, actions: list[Action], interval_s: float | None = None
) -> int:
    stopped = trio.Event()

    async def execute(acts: Sequence[Action]) -> None:
        actions.extend(acts)

    async def stop_later() -> None:
        await trio.sleep(seconds)
        stopped.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_later)
        return await serve_until_stopped(b, stopped, execute, interval_s)


def test_a_serving_peer_forgets_replicas_that_arrive_after_its_last_round() -> None:
    b = engine(1, max_staleness_s=STALE)  # forget_after_s: 100 s by default
    visitors = [engine(2 + i, max_staleness_s=STALE) for i in range(5)]

    async def main() -> int:
        for v in visitors:  # they publish to b after its last round, then leave
            first = v.finish_round(train_step(v, 0.5), trio.current_time()).actions[0]
            assert isinstance(first, Publish)
            b.handle_announce(first.envelope, v.peer_id, trio.current_time())
        assert len(b.replicas) == 5
        return await _serve_for(100.0 + 2 * STALE + 1, b, [])

    passes = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert passes >= 10
    assert b.replicas == {}
    assert len(b.forgotten) == 5


def test_a_serving_peer_readmits_expired_evictions() -> None:
    """A conviction lasts a day; a round would end it then, and so does serving."""
    b = engine(1, max_staleness_s=STALE)
    actions: list[Action] = []

    async def main() -> None:
        b.bans.convict("x", trio.current_time(), "equivocation")
        await _serve_for(86_400.0 + 3_600.0, b, actions, interval_s=3_600.0)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [a.peer for a in actions if isinstance(a, Readmit)] == ["x"]


def test_stopping_ends_the_serving_at_once() -> None:
    b = engine(1, max_staleness_s=STALE)

    async def main() -> int:
        return await _serve_for(1.0, b, [])

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == 0
