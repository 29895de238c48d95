"""GroupMember over the in-memory hub with trio's clock: timeouts, a member that never shows, the next
round's messages arriving early, and closing."""

from __future__ import annotations

import numpy as np
import trio
import trio.testing

from p2pfl.sim.secagg_sim import SecAggHub, SecAggSpec

from .harness import identities

IDS = identities(8, seed=7)


def _hub() -> SecAggHub:
    return SecAggHub(SecAggSpec(tuple(range(8)), (("threshold", 5),)), [i.peer_id for i in IDS], "net")


def _xs(dim: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.uniform(-1, 1, dim).astype(np.float32) for _ in IDS]


async def test_rounds_complete_without_a_member_that_never_shows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Member 7 never starts: the others wait out the advert timeout (fake clock), then finish two rounds
    in a row with the mean of the seven (the second round's adverts can arrive before a member got there)."""
    hub, xs = _hub(), _xs()
    members = [hub.member(i) for i in IDS]
    means: dict[tuple[int, int], np.ndarray | None] = {}

    async def run(k: int) -> None:
        for r in (1, 2):
            means[k, r] = await members[k].mean(r, xs[k] * r)  # type: ignore[union-attr]

    async with trio.open_nursery() as nursery:
        for k in range(7):
            nursery.start_soon(run, k)
    cfg = hub.config
    order = [cfg.members.index(i.peer_id) for i in IDS]  # spec index of each identity
    assert sorted(order) == list(range(8))
    for r in (1, 2):
        expected = np.mean([xs[k].astype(np.float64) * r for k in range(7)], axis=0)
        for k in range(7):
            got = means[k, r]
            assert got is not None
            assert np.max(np.abs(got - expected)) <= cfg.spec("net", 32).fixed.max_error()
    assert all(not m.failures for m in members[:7])  # type: ignore[union-attr]


async def test_below_threshold_returns_none_and_counts_the_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub, xs = _hub(), _xs()
    members = [hub.member(i) for i in IDS]
    results: list[np.ndarray | None] = []

    async def run(k: int) -> None:
        results.append(await members[k].mean(1, xs[k]))  # type: ignore[union-attr]

    async with trio.open_nursery() as nursery:
        for k in range(4):  # 4 < 5
            nursery.start_soon(run, k)
    assert results == [None] * 4
    assert all(m.failures["below_threshold"] == 1 for m in members[:4])  # type: ignore[union-attr]


async def test_closing_the_hub_ends_a_waiting_round(autojump_clock: trio.testing.MockClock) -> None:
    hub, xs = _hub(), _xs()
    member = hub.member(IDS[0])
    assert member is not None
    got: list[np.ndarray | None] = [xs[0]]

    async def run() -> None:
        got[0] = await member.mean(1, xs[0])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.sleep(1.0)
        hub.close()
    assert got[0] is None and member.failures["closed"] == 1
