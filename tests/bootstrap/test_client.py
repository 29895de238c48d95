"""BootstrapClient against registries on the in-process memory transport (fast, deterministic clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import msgpack
import pytest
import trio

from p2pfl.bootstrap.service import BootstrapService, Registry, RegistryConfig
from p2pfl.discovery import (
    PROTOCOL_ID,
    BootstrapClient,
    PeerCache,
    PeerRecord,
    RegistryUnavailableError,
    decode_message,
    dial_record,
    encode_message,
)
from p2pfl.identity import Identity
from p2pfl.transport.memory import MemoryNetwork, MemoryTransport

TEST_CONFIG = RegistryConfig(min_ttl=1.0, rate_per_second=1000.0, burst=1000.0)


def ident(i: int) -> Identity:
    return Identity(bytes([i]) * 32)


@asynccontextmanager
async def registry(
    net: MemoryNetwork, i: int = 200, config: RegistryConfig = TEST_CONFIG
) -> AsyncIterator[tuple[MemoryTransport, Registry]]:
    async with net.open(network_id="registry", seed=ident(i).seed) as t, trio.open_nursery() as nursery:
        reg = Registry(config)
        await nursery.start(BootstrapService(t, reg, sweep_interval=0.1).run)
        yield t, reg
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def clients(
    net: MemoryNetwork, ids: range, network_id: str, registries: list[str], **kw: object
) -> AsyncIterator[list[BootstrapClient]]:
    async with AsyncExitStack() as stack:
        out = []
        for i in ids:
            t = await stack.enter_async_context(net.open(network_id=network_id, seed=ident(i).seed))
            out.append(BootstrapClient(t, ident(i), network_id, registries, **kw))  # type: ignore[arg-type]
        yield out


async def test_peers_find_only_their_own_network(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with registry(net) as (rt, _):
        addr = rt.listen_addrs[0]
        async with clients(net, range(1, 4), "A", [addr]) as a, clients(net, range(4, 6), "B", [addr]) as b:
            for c in a + b:
                assert await c.register() == 1
            found_a = await a[0].discover()
            found_b = await b[0].discover()
    assert {r.peer_id for r in found_a} == {ident(2).peer_id, ident(3).peer_id}  # never ourselves
    assert {r.peer_id for r in found_b} == {ident(5).peer_id}
    assert all(r.network_id == "A" for r in found_a)


async def test_discovery_pages_through_many_peers(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with registry(net) as (rt, _), clients(net, range(1, 131), "A", [rt.listen_addrs[0]]) as cs:
        for c in cs:
            await c.register()
        assert len(await cs[0].discover()) == 129
        assert len(await cs[0].discover(max_records=50)) == 50


async def test_dead_registry_is_skipped(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    dead = f"memory/{ident(250).peer_id}"
    async with registry(net) as (rt, _), clients(net, range(1, 3), "A", [dead, rt.listen_addrs[0]]) as cs:
        assert [await c.register() for c in cs] == [1, 1]
        assert [r.peer_id for r in await cs[0].discover()] == [ident(2).peer_id]


async def test_two_registries_are_merged(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        registry(net, 200) as (r1, _),
        registry(net, 201) as (r2, _),
        clients(net, range(1, 2), "A", [r1.listen_addrs[0]]) as only1,
        clients(net, range(2, 3), "A", [r2.listen_addrs[0]]) as only2,
        clients(net, range(3, 4), "A", [r1.listen_addrs[0], r2.listen_addrs[0]]) as both,
    ):
        await only1[0].register()
        await only2[0].register()
        assert await both[0].register() == 2
        assert {r.peer_id for r in await both[0].discover()} == {ident(1).peer_id, ident(2).peer_id}


async def test_lying_registry_cannot_redirect_peers(autojump_clock: trio.abc.Clock) -> None:
    """A malicious registry returns a tampered record, another peer's record and garbage: all rejected."""
    net = MemoryNetwork()
    honest = PeerRecord.create(ident(7), "A", ["/ip4/127.0.0.1/tcp/4007"])
    outer = msgpack.unpackb(honest.encoded)
    body = msgpack.unpackb(outer[1])
    body["addrs"] = [f"/ip4/10.6.6.6/tcp/666/p2p/{ident(7).peer_id}"]
    outer[1] = msgpack.packb(dict(sorted(body.items())))
    tampered = msgpack.packb(outer)
    wrong_net = PeerRecord.create(ident(8), "B", ["/ip4/127.0.0.1/tcp/4008"]).encoded

    async def liar(requester: str, data: bytes) -> bytes:
        return encode_message({"ok": True, "records": [tampered, wrong_net, b"junk", 5, honest.encoded]})

    async with net.open(network_id="x", seed=ident(66).seed) as evil:
        evil.set_request_handler(PROTOCOL_ID, liar)
        async with clients(net, range(1, 2), "A", [evil.listen_addrs[0]]) as (c,):
            found = await c.discover()
    assert found == [honest]


async def test_registries_down_fall_back_to_the_peer_cache(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    net = MemoryNetwork()
    state = tmp_path / "state"
    async with registry(net) as (rt, _):
        addr = rt.listen_addrs[0]
        async with clients(net, range(1, 4), "A", [addr]) as cs:
            cache = PeerCache.in_state_dir(state, network_id="A", own_peer_id=ident(1).peer_id)
            cs[0].cache = cache
            for c in cs:
                await c.register()
            assert len(await cs[0].discover()) == 2
    # Registry gone; a "restarted" peer loads the cache from disk and still finds its peers.
    async with clients(net, range(1, 2), "A", [addr]) as (c,), clients(net, range(2, 4), "A", []) as others:
        c.cache = PeerCache.in_state_dir(state, network_id="A", own_peer_id=ident(1).peer_id)
        with pytest.raises(RegistryUnavailableError):
            await c.discover()
        with pytest.raises(RegistryUnavailableError):
            await c.register()
        found = await c.find_peers()
        assert {r.peer_id for r in found} == {ident(2).peer_id, ident(3).peer_id}
        assert await dial_record(c.transport, found[0]) == found[0].peer_id
        assert {o.transport.peer_id for o in others} == {r.peer_id for r in found}


async def test_renewal_keeps_a_peer_listed_and_expiry_removes_it(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with registry(net) as (rt, reg):
        addr = rt.listen_addrs[0]
        async with clients(net, range(1, 3), "A", [addr], ttl=2) as (renewing, silent):
            async with trio.open_nursery() as nursery:
                await nursery.start(renewing.run_renewal)
                await silent.register()
                assert reg.network_size("A") == 2
                await trio.sleep(10)  # five ttls: the renewing peer stays, the silent one expired
                assert [r.peer_id for r in await silent.discover()] == [renewing.identity.peer_id]
                assert reg.network_size("A") == 1
                nursery.cancel_scope.cancel()
            await trio.sleep(3)
            assert reg.network_size("A") == 0
            assert reg.counters["expired"] == 2


async def test_renewal_starts_even_when_every_registry_is_down(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with clients(net, range(1, 2), "A", [f"memory/{ident(250).peer_id}"]) as (c,):
        with trio.fail_after(1):
            async with trio.open_nursery() as nursery:
                await nursery.start(c.run_renewal)
                nursery.cancel_scope.cancel()


async def test_rate_limited_discovery_waits_and_retries(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    cfg = RegistryConfig(min_ttl=1.0, rate_per_second=2.0, burst=2.0)
    async with (
        registry(net, config=cfg) as (rt, reg),
        clients(net, range(1, 8), "A", [rt.listen_addrs[0]]) as cs,
    ):
        for c in cs:
            await c.register()  # one request per peer: within each peer's own bucket
        found = []
        for _ in range(3):
            found = await cs[0].discover(max_records=6)
        assert len(found) == 6
        assert reg.counters.get("error_rate_limited", 0) >= 1


async def test_status_and_unregister(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with registry(net) as (rt, reg), clients(net, range(1, 2), "A", [rt.listen_addrs[0]]) as (c,):
        await c.register()
        st = await c.status(rt.listen_addrs[0])
        assert st["status"]["registrations"] == 1 and st["status"]["peer_id"] == rt.peer_id
        assert await c.unregister() == 1
        assert reg.total == 0
        raw = await c.transport.request(rt.peer_id, PROTOCOL_ID, b"\xc1", max_response=1 << 16, timeout=1)
        assert decode_message(raw)["error"] == "malformed"


async def test_a_large_network_is_sampled_from_a_random_point_not_from_the_smallest_ids(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A registry lists records by peer id, which a member can grind. Read from the start, every discovery
    of more peers than ``max_records`` returned the same smallest ids; from a random point (wrapping round)
    each peer is about as likely as any other, and the whole list is still read when it fits."""
    import random

    net = MemoryNetwork()
    async with registry(net) as (rt, _), clients(net, range(1, 131), "A", [rt.listen_addrs[0]]) as cs:
        for c in cs:
            await c.register()
        others = sorted(ident(i).peer_id for i in range(2, 131))
        smallest = set(others[:10])
        counts = {p: 0 for p in others}
        trials = 40
        for seed in range(trials):
            cs[0]._rng = random.Random(seed)
            found = await cs[0].discover(max_records=50)
            ids = [r.peer_id for r in found]
            assert len(ids) == len(set(ids)) == 50
            for p in ids:
                counts[p] += 1
            assert len(await cs[0].discover()) == 129  # a list that fits is read whole, wrapped or not
    share_smallest = sum(counts[p] for p in smallest) / (10 * trials)
    assert 0.2 < share_smallest < 0.6, share_smallest  # 50 of 129: 0.39; from the start it was 1.0
    assert sum(1 for p in others if counts[p] == 0) < 10  # (from the start: the 79 largest, never)


async def test_a_registry_paging_rejected_records_forever_cannot_hold_a_discovery(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A hostile registry answers every page with records the client rejects and a new cursor each time.
    A page the client keeps nothing of ends the listing: before, discovery asked for the next page for
    ever (here stopped by the registry itself after 500), and a rotation awaiting its candidates with it."""
    asked = 0

    async def pager(requester: str, data: bytes) -> bytes:
        nonlocal asked
        asked += 1
        return encode_message(
            {"ok": True, "records": [b"junk", 5], "next": None if asked >= 500 else f"c{asked}"}
        )

    net = MemoryNetwork()
    async with net.open(network_id="x", seed=ident(66).seed) as evil:
        evil.set_request_handler(PROTOCOL_ID, pager)
        async with clients(net, range(1, 2), "A", [evil.listen_addrs[0]]) as (c,):
            assert await c.discover() == []
    assert asked <= 2, asked  # a listing from the random point, and its wrap from the start
