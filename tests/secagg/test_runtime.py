"""GroupMember over the in-memory hub with trio's clock: timeouts, a member that never shows, the next
round's messages arriving early, and closing."""

from __future__ import annotations

from pathlib import Path

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


async def test_a_restarted_member_never_reruns_a_group_round_number(tmp_path: Path) -> None:
    """The next group round number is written before a round's first message leaves: a member restarted
    from its state begins past every number it used, even with its own round counter back at 1 (the
    others, at 1, catch up to it), and the round completes with all eight. (Real clock: the write runs in a
    thread, and an autojumping clock would let the others' deadlines pass meanwhile; no wait is needed
    here, the bound is only a guard.)"""
    from p2pfl.secagg.runtime import GroupMember

    hub, xs = _hub(), _xs()
    members = [m for i in IDS if (m := hub.member(i)) is not None]
    kept = tmp_path / "secagg_round"

    async def round_(first: GroupMember, floor: int) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * 8

        async def run(k: int) -> None:
            m = first if k == 0 else members[k]
            out[k] = await m.mean(floor if k == 0 else 1, xs[k])

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for k in range(8):
                    nursery.start_soon(run, k)
        return out

    before = GroupMember(hub.config, IDS[0], "net", members[0].channel, round_file=kept)
    assert all(m is not None for m in await round_(before, 7))
    assert before.last_round == 7 and kept.read_text() == "8"
    # everybody restarts; only member 0 kept its state
    members[1:] = [GroupMember(hub.config, IDS[k], "net", m.channel) for k, m in enumerate(members) if k]
    restarted = GroupMember(hub.config, IDS[0], "net", members[0].channel, round_file=kept)
    means = await round_(restarted, 1)
    assert all(m is not None for m in means)
    assert restarted.last_round >= 8 and kept.read_text() == str(restarted.last_round + 1)
