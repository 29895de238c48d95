"""MemoryTransport: same contract as the libp2p transport, in one process, cheap enough for 1000 peers."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

from p2pfl.errors import TransportError
from p2pfl.transport.base import Transport
from p2pfl.transport.memory import MemoryConfig, MemoryNetwork, MemoryTransport, peer_id_from_seed


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []

    async def __call__(self, forwarder: str, data: bytes) -> None:
        self.items.append((forwarder, data))


async def settle(timeout: float = 5.0) -> None:
    """Let every inbox task run until the network is quiet (bounded)."""
    with trio.fail_after(timeout):
        await trio.testing.wait_all_tasks_blocked()


@asynccontextmanager
async def network(
    n: int, *, flood: bool = True, network_ids: list[str] | None = None, config: MemoryConfig | None = None
) -> AsyncIterator[tuple[MemoryNetwork, list[MemoryTransport]]]:
    net = MemoryNetwork(flood=flood)
    async with AsyncExitStack() as stack:
        ts = [
            await stack.enter_async_context(
                net.open(
                    peer_id=f"peer-{i:04d}",
                    network_id=network_ids[i] if network_ids else "test",
                    config=config,
                )
            )
            for i in range(n)
        ]
        yield net, ts


async def connect_line(ts: list[MemoryTransport]) -> None:
    for x, y in itertools.pairwise(ts):
        await x.connect(y.listen_addrs[0])


def test_peer_id_from_seed_matches_libp2p() -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    for s in (bytes(32), bytes(range(32)), b"\xff" * 32):
        assert peer_id_from_seed(s) == str(ID.from_pubkey(create_new_key_pair(s).public_key))
    with pytest.raises(TransportError):
        peer_id_from_seed(b"short")


def test_import_does_not_load_libp2p() -> None:
    code = (
        "import sys, p2pfl.transport.memory, p2pfl.transport; "
        "assert not any(m == 'libp2p' or m.startswith('libp2p.') for m in sys.modules), 'libp2p imported'; "
        "p2pfl.transport.MemoryNetwork"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_broadcast_reaches_the_senders_neighbours_only() -> None:
    """Like the libp2p transport's per-publisher topics: only peers connected to the origin subscribe."""
    async with network(4) as (_net, ts):
        _typed: Transport = ts[0]
        await connect_line(ts)
        boxes = [Inbox() for _ in ts]
        for t, box in zip(ts, boxes, strict=True):
            t.set_gossip_handler(box)
        await ts[0].broadcast(b"hello")
        await ts[1].broadcast(b"mid")
        await settle()
        assert boxes[0].items == [(ts[1].peer_id, b"mid")]
        assert boxes[1].items == [(ts[0].peer_id, b"hello")]
        assert boxes[2].items == [(ts[1].peer_id, b"mid")]
        assert boxes[3].items == []  # two hops from both origins: never relayed to it
        assert ts[2].stats.messages_received == 1 and ts[2].stats.bytes_received == 3
        assert ts[0].stats.messages_sent == 1


async def test_relay_among_subscribers_dedups() -> None:
    """A complete graph of 4 relays every message along several paths; each arrives exactly once."""
    async with network(5) as (_net, ts):
        for x, y in itertools.combinations(ts[:4], 2):
            await x.connect(y.listen_addrs[0])
        await ts[3].connect(ts[4].listen_addrs[0])  # a pendant peer, not connected to the origin
        boxes = [Inbox() for _ in ts]
        for t, box in zip(ts, boxes, strict=True):
            t.set_gossip_handler(box)
        for i in range(3):
            await ts[2].broadcast(bytes([i]))
        await settle()
        for j, box in enumerate(boxes):
            assert sorted(d for _, d in box.items) == ([] if j in (2, 4) else [b"\x00", b"\x01", b"\x02"])
        # relays happened (every peer connected to the origin re-sent to the others), none was delivered twice
        assert sum(t.stats.messages_received for t in ts) == 9


async def test_a_restarted_peer_is_heard_again() -> None:
    """Regression: a transport reopened under the same peer id counted its messages from 1 again, and a
    neighbour that had seen the old ones dropped the new ones as duplicates (a churned simulated peer's
    versions stopped reaching its neighbours)."""
    net = MemoryNetwork()
    async with net.open(peer_id="peer-a", network_id="test") as a:
        box = Inbox()
        a.set_gossip_handler(box)
        for run in (b"before", b"after"):  # the same peer id, two transports one after the other
            async with net.open(peer_id="peer-b", network_id="test") as b:
                await b.connect(a.listen_addrs[0])
                await b.broadcast(run)
                await settle()
        assert [d for _, d in box.items] == [b"before", b"after"]


async def test_direct_only_mode() -> None:
    async with network(3, flood=False) as (_net, ts):
        await connect_line(ts)
        boxes = [Inbox() for _ in ts]
        for t, box in zip(ts, boxes, strict=True):
            t.set_gossip_handler(box)
        await ts[0].broadcast(b"x")
        await settle()
        assert boxes[1].items == [(ts[0].peer_id, b"x")]
        assert boxes[2].items == []


async def test_validator_rejects_not_delivered_not_forwarded() -> None:
    async with network(3) as (_net, ts):
        await connect_line(ts)
        await ts[0].connect(ts[2].listen_addrs[0])  # a triangle: ts[1] would relay to ts[2]
        boxes = [Inbox() for _ in ts]
        for t, box in zip(ts, boxes, strict=True):
            t.set_gossip_handler(box)

        def validator(forwarder: str, data: bytes) -> bool:
            if data == b"boom":
                raise ValueError("bug")
            return data != b"bad"

        ts[1].set_gossip_validator(validator)
        for d in (b"bad", b"boom", b"good"):
            await ts[0].broadcast(d)
        await settle()
        assert boxes[1].items == [(ts[0].peer_id, b"good")]
        # ts[2] got all three straight from the origin, and no copy of the rejected ones through ts[1]
        assert sorted(boxes[2].items) == [(ts[0].peer_id, d) for d in (b"bad", b"boom", b"good")]
        assert ts[2].stats.messages_received == 3
        # a rejected message is not remembered as seen: ts[2]'s relayed copies were judged (and refused) again
        assert ts[1].stats.dropped == {"gossip_invalid": 4, "gossip_validator_error": 2}
        assert ts[1].peer_score(ts[0].peer_id) < 0


async def test_network_id_separates_topics() -> None:
    async with network(2, network_ids=["a", "b"]) as (_net, ts):
        await connect_line(ts)
        box = Inbox()
        ts[1].set_gossip_handler(box)
        await ts[0].broadcast(b"x")
        await settle()
        assert box.items == []


async def test_oversize_and_errors() -> None:
    async with network(2, config=MemoryConfig(gossip_max_bytes=10)) as (_net, (a, b)):
        await a.broadcast(b"x" * 10)
        with pytest.raises(TransportError, match="exceeds the gossip cap"):
            await a.broadcast(b"x" * 11)
        with pytest.raises(TransportError, match="invalid memory address"):
            await a.connect("/ip4/127.0.0.1/tcp/1")
        with pytest.raises(TransportError, match="no such peer"):
            await a.connect("memory/nobody")
        with pytest.raises(TransportError, match="ourselves"):
            await a.connect(a.listen_addrs[0])
        assert await a.connect(b.listen_addrs[0]) == b.peer_id
        assert a.connected_peers() == [b.peer_id] and b.connected_peers() == [a.peer_id]
        assert a.is_connected(b.peer_id) and b.is_connected(a.peer_id) and not a.is_connected("memory/nobody")
        await a.disconnect(b.peer_id)
        assert a.connected_peers() == [] and b.connected_peers() == []
        assert not a.is_connected(b.peer_id) and not b.is_connected(a.peer_id)
    with pytest.raises(TransportError, match="not running"):
        await a.broadcast(b"x")


async def test_requests() -> None:
    async with network(3) as (_net, (a, b, _c)):
        big = bytes(range(256)) * 65536

        async def handler(peer: str, req: bytes) -> bytes:
            if req == b"fail":
                raise ValueError("no such digest")
            if req == b"stall":
                await trio.sleep_forever()
            return big if req == b"big" else req[::-1]

        b.set_request_handler("/p2pfl/delta/1", handler)
        with pytest.raises(TransportError, match="not connected"):
            await a.request(b.peer_id, "/p2pfl/delta/1", b"x", max_response=10, timeout=1)
        await a.connect(b.listen_addrs[0])
        assert await a.request(b.peer_id, "/p2pfl/delta/1", b"abc", max_response=10, timeout=1) == b"cba"
        assert await a.request(b.peer_id, "/p2pfl/delta/1", b"big", max_response=16 << 20, timeout=5) == big
        with pytest.raises(TransportError, match="exceeds max_response"):
            await a.request(b.peer_id, "/p2pfl/delta/1", b"big", max_response=1000, timeout=5)
        with pytest.raises(TransportError, match="remote handler failed: ValueError: no such digest"):
            await a.request(b.peer_id, "/p2pfl/delta/1", b"fail", max_response=10, timeout=1)
        with pytest.raises(TransportError, match="timed out"):
            await a.request(b.peer_id, "/p2pfl/delta/1", b"stall", max_response=10, timeout=0.05)
        with pytest.raises(TransportError, match="protocol unsupported"):
            await a.request(b.peer_id, "/other/1", b"x", max_response=10, timeout=1)
        with pytest.raises(TransportError, match="max_request_bytes"):
            await a.request(b.peer_id, "/p2pfl/delta/1", bytes(65 * 1024), max_response=10, timeout=1)
        assert b.stats.requests_served == 3
        assert a.stats.requests_failed == 6
        assert a.stats.bytes_received == 3 + len(big)


async def test_inbound_stream_cap() -> None:
    async with network(2, config=MemoryConfig(max_inbound_streams_per_peer=2)) as (_net, (a, b)):
        release = trio.Event()

        async def slow(peer: str, req: bytes) -> bytes:
            await release.wait()
            return b"ok"

        b.set_request_handler("/slow/1", slow)
        await a.connect(b.listen_addrs[0])
        results: list[bytes] = []

        async def call() -> None:
            results.append(await a.request(b.peer_id, "/slow/1", b"", max_response=10, timeout=5))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(TransportError, match="too many concurrent streams"):
                await a.request(b.peer_id, "/slow/1", b"", max_response=10, timeout=5)
            release.set()
        assert results == [b"ok", b"ok"]
        assert b.stats.dropped == {"inbound_stream_limit": 1}


async def test_peer_filter_and_block() -> None:
    async with network(3) as (_net, (a, b, c)):
        b.set_peer_filter(lambda pid: pid != a.peer_id)
        with pytest.raises(TransportError, match="refused by the remote"):
            await a.connect(b.listen_addrs[0])
        with pytest.raises(TransportError, match="refused"):
            await b.connect(a.listen_addrs[0])
        assert b.stats.dropped["peer_filter"] == 1
        # Gossip from a refused origin relayed by an allowed peer is dropped too.
        await a.connect(c.listen_addrs[0])
        await c.connect(b.listen_addrs[0])
        box = Inbox()
        b.set_gossip_handler(box)
        await a.broadcast(b"x")
        await c.broadcast(b"y")
        await settle()
        assert box.items == [(c.peer_id, b"y")]
        # Blocking disconnects and refuses until unblocked.
        await b.block(c.peer_id)
        assert c.peer_id not in b.connected_peers() and b.peer_id not in c.connected_peers()
        with pytest.raises(TransportError):
            await c.connect(b.listen_addrs[0])
        b.unblock(c.peer_id)
        await c.connect(b.listen_addrs[0])


async def test_link_filter_refuses_new_links_either_way_but_not_messages() -> None:
    """A link rotation's rest (p2pfl.protocol.rotation): no new link with the resting peer, from either
    end; a link already open stays, and the peer's gossip and requests on it pass (the peer filter, by
    contrast, drops them)."""
    async with network(3) as (_net, (a, b, c)):
        b.set_link_filter(lambda pid: pid != a.peer_id)
        with pytest.raises(TransportError, match="refuses the link"):
            await a.connect(b.listen_addrs[0])
        with pytest.raises(TransportError, match="link filter"):
            await b.connect(a.listen_addrs[0])
        assert b.stats.dropped == {"link_filter": 1}
        await c.connect(b.listen_addrs[0])
        b.set_link_filter(lambda pid: pid != c.peer_id)
        box = Inbox()
        b.set_gossip_handler(box)
        await c.broadcast(b"from c")
        await settle()
        assert c.peer_id in b.connected_peers()  # an open link stays
        assert box.items == [(c.peer_id, b"from c")]
        await c.connect(b.listen_addrs[0])  # dialling it again is no new link
        b.set_link_filter(None)
        await a.connect(b.listen_addrs[0])
        assert a.peer_id in b.connected_peers()


async def test_thousand_transports_random_graph() -> None:
    """1000 peers, random 4-regular-ish graph: each broadcast reaches the origin's neighbours, once each."""
    rng = random.Random(7)
    n = 1000
    with trio.fail_after(30):
        async with network(n) as (_net, ts):
            for i, t in enumerate(ts):  # a ring keeps it connected, plus random chords
                await t.connect(ts[(i + 1) % n].listen_addrs[0])
                j = rng.randrange(n)
                if j != i:
                    await t.connect(ts[j].listen_addrs[0])
            counts = [0] * n

            def make(i: int) -> Inbox:
                class Counting(Inbox):
                    async def __call__(self, forwarder: str, data: bytes) -> None:
                        counts[i] += 1

                return Counting()

            for i, t in enumerate(ts):
                t.set_gossip_handler(make(i))
            for t in ts:
                await t.broadcast(b"model delta announcement")
            await settle(20)
            assert counts == [len(t.connected_peers()) for t in ts]
