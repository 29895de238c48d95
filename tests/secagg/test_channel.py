"""TransportChannel (``/p2pfl/secagg/1``): the membership gate, the size cap, the bounded inbox, sends that
never block the round loop, and whole group rounds over it (fake transport, trio's fake clock)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.errors import TransportError
from p2pfl.secagg.channel import SECAGG_PROTOCOL, TransportChannel, join_group
from p2pfl.secagg.config import SecAggConfig
from p2pfl.secagg.errors import SecAggError
from p2pfl.secagg.runtime import GroupMember

from .harness import identities

IDS = identities(5, seed=3)
PIDS = sorted(i.peer_id for i in IDS)
OUTSIDER = identities(1, seed=99)[0].peer_id


class FakeNet:
    """Routes requests to the handlers of the registered transports; ``hung`` peers never answer (the
    request times out), ``gone`` peers are unknown (it fails at once)."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[str, bytes], Awaitable[bytes]]] = {}
        self.hung: set[str] = set()
        self.gone: set[str] = set()

    def transport(self, me: str) -> FakeTransport:
        return FakeTransport(self, me)


class FakeTransport:
    def __init__(self, net: FakeNet, me: str) -> None:
        self.net, self.me = net, me

    def set_request_handler(self, protocol: str, handler: Callable[[str, bytes], Awaitable[bytes]]) -> None:
        assert protocol == SECAGG_PROTOCOL
        self.net.handlers[self.me] = handler

    async def request(
        self, peer_id: str, protocol: str, data: bytes, *, max_response: int, timeout: float
    ) -> bytes:
        if peer_id in self.net.gone or peer_id not in self.net.handlers:
            raise TransportError(f"peer {peer_id} is unknown")
        with trio.move_on_after(timeout):
            if peer_id in self.net.hung:
                await trio.sleep_forever()
            try:
                return await self.net.handlers[peer_id](self.me, data)
            except SecAggError as exc:
                raise TransportError(f"remote handler failed: {exc}") from exc
        raise TransportError("timed out")


def _channel(net: FakeNet, me: str, **kw: int) -> TransportChannel:
    ch = TransportChannel(net.transport(me), me, PIDS, max_message_bytes=1000, send_timeout_s=5.0, **kw)  # type: ignore[arg-type]
    net.handlers[me] = ch.serve
    return ch


async def _pending(ch: TransportChannel) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(1000):
        with trio.move_on_after(0.01) as scope:
            out.append(await ch.receive())
        if scope.cancelled_caught:
            break
    return out


async def test_only_other_members_are_delivered(autojump_clock: trio.testing.MockClock) -> None:
    """An outsider (and a peer claiming to be ourselves) is refused and counted, never delivered."""
    ch = _channel(FakeNet(), PIDS[0])
    for who in (OUTSIDER, PIDS[0]):
        with pytest.raises(SecAggError) as info:
            await ch.serve(who, b"x")
        assert info.value.reason == "not_member"
    assert await ch.serve(PIDS[1], b"hello") == b""
    assert await _pending(ch) == [b"hello"]
    assert ch.counts["refused_not_member"] == 2 and ch.delivered == 1


async def test_oversize_messages_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    ch = _channel(FakeNet(), PIDS[0])
    with pytest.raises(SecAggError) as info:
        await ch.serve(PIDS[1], b"x" * 1001)
    assert info.value.reason == "oversize"
    await ch.serve(PIDS[1], b"x" * 1000)  # the cap itself passes
    assert len(await _pending(ch)) == 1 and ch.counts["refused_oversize"] == 1


async def test_a_flooding_member_fills_only_its_own_share_of_the_inbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A member sending far more than a round's messages: the excess is dropped and counted, and another
    member's message still gets in (the flood cannot starve it)."""
    ch = _channel(FakeNet(), PIDS[0], inbox_per_member=4)
    for k in range(50):
        await ch.serve(PIDS[1], b"%d" % k)
    await ch.serve(PIDS[2], b"other")
    got = await _pending(ch)
    assert got == [b"0", b"1", b"2", b"3", b"other"]
    assert ch.counts["dropped_inbox_full"] == 46
    await ch.serve(PIDS[1], b"again")  # its quota frees up as the round loop reads
    assert await _pending(ch) == [b"again"]


async def test_a_hung_or_gone_member_never_blocks_the_sender(autojump_clock: trio.testing.MockClock) -> None:
    """Sends return at once; a hung member's requests time out one by one in their own task while the
    healthy members get every message, in order; beyond its queue a hung member's messages are dropped."""
    net = FakeNet()
    chans = {p: _channel(net, p, send_queue_per_member=3) for p in PIDS}
    chans[PIDS[0]].retry_s = 0.0  # one attempt per message
    net.hung.add(PIDS[1])
    net.gone.add(PIDS[2])
    sender = chans[PIDS[0]]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run)
        t0 = trio.current_time()
        for k in range(3):
            for p in PIDS[1:]:
                await sender.send(p, b"m%d" % k)
        await sender.send(OUTSIDER, b"nope")
        assert trio.current_time() == t0  # never waited for anyone
        await trio.sleep(1.0)
        for p in PIDS[3:]:
            assert await _pending(chans[p]) == [b"m0", b"m1", b"m2"]
        assert sender.counts["send_failed"] == 3  # the gone member's three, at once
        for _ in range(5):  # the hung member's queue holds 3; the first is in flight
            await sender.send(PIDS[1], b"more")
        assert sender.counts["dropped_send_queue_full"] >= 1
        await trio.sleep(60)
        assert sender.counts["send_failed"] >= 3 + 4  # the hung member's requests time out, 5 s each
        assert sender.counts["send_not_member"] == 1
        nursery.cancel_scope.cancel()


async def test_a_member_that_comes_up_late_gets_its_messages_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Messages to a member not reachable yet are retried (in order) for ``retry_s``, then given up."""
    net = FakeNet()
    sender, late = _channel(net, PIDS[0]), _channel(net, PIDS[1])
    sender.retry_s = 3.0
    net.gone.add(PIDS[1])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run)
        await sender.send(PIDS[1], b"a")
        await sender.send(PIDS[1], b"b")
        await trio.sleep(2.0)
        net.gone.discard(PIDS[1])
        await trio.sleep(1.0)
        assert await _pending(late) == [b"a", b"b"] and sender.counts["send_failed"] == 0
        net.gone.add(PIDS[1])
        await sender.send(PIDS[1], b"c")
        await trio.sleep(10.0)
        assert sender.counts["send_failed"] == 1 and sender.sent == 2
        nursery.cancel_scope.cancel()


def _member(net: FakeNet, k: int) -> tuple[GroupMember, TransportChannel]:
    config = SecAggConfig(
        enabled=True, members=tuple(PIDS), threshold=3, phase_timeout_s=5.0, advertise_timeout_s=10.0
    )
    return join_group(config, IDS[k], "net", net.transport(IDS[k].peer_id), 16)  # type: ignore[arg-type]


async def test_group_rounds_over_the_channel_give_the_mean(autojump_clock: trio.testing.MockClock) -> None:
    """Five members, threshold 3, over TransportChannel: every member gets the mean; with one member gone
    (its messages never arrive) the four others still complete with the mean of the four."""
    net = FakeNet()
    pairs = [_member(net, k) for k in range(5)]
    rng = np.random.default_rng(5)
    xs = [rng.uniform(-1, 1, 16).astype(np.float32) for _ in range(5)]
    out: dict[tuple[int, int], np.ndarray | None] = {}

    async def run(k: int, rounds: list[int]) -> None:
        for r in rounds:
            out[k, r] = await pairs[k][0].mean(r, xs[k] * r)

    async with trio.open_nursery() as nursery:
        for _m, ch in pairs:
            nursery.start_soon(ch.run)
        async with trio.open_nursery() as group:
            for k in range(5):
                group.start_soon(run, k, [1])
        net.gone.add(IDS[4].peer_id)
        async with trio.open_nursery() as group:
            for k in range(4):
                group.start_soon(run, k, [2])
        nursery.cancel_scope.cancel()
    full = np.mean(xs, axis=0)
    four = np.mean([x * 2 for x in xs[:4]], axis=0)
    for k in range(5):
        np.testing.assert_allclose(out[k, 1], full, atol=1e-5)  # type: ignore[arg-type]
    for k in range(4):
        np.testing.assert_allclose(out[k, 2], four, atol=1e-5)  # type: ignore[arg-type]
        assert pairs[k][0].completed == 2 and not pairs[k][0].failures


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([*PIDS, OUTSIDER, "", "garbage"]), st.binary(max_size=1200)), max_size=60
    )
)
def test_any_input_is_queued_or_refused_never_anything_else(reqs: list[tuple[str, bytes]]) -> None:
    """Whatever arrives: delivered byte for byte, or refused with a SecAggError, or dropped and counted."""

    async def main() -> None:
        ch = _channel(FakeNet(), PIDS[0], inbox_per_member=4)
        accepted = []
        for who, data in reqs:
            try:
                assert await ch.serve(who, data) == b""
            except SecAggError as exc:
                assert exc.reason in ("not_member", "oversize")
            else:
                accepted.append(data)
        got = await _pending(ch)
        assert set(got) <= set(accepted) and len(got) + ch.counts["dropped_inbox_full"] == len(accepted)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
