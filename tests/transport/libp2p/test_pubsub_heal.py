"""A link whose pubsub state went out of step with its connections heals (127.0.0.1 only).

py-libp2p's pubsub keeps one stream and one subscription set per *peer*, while crossing dials and their resync
give a pair several connections that open and close in any order. Two states followed, seen after crossing
dials at start-up (docs/benchmarks.md, "Crossing dials at start-up"): pubsub's stream left on a closed
connection while a live one is up, and a peer's subscriptions forgotten by one end while the link stays. In
both, gossip between the two stopped for good although they stayed connected. Each test forces its state
deterministically, with the resync switched off so that only the healing is tested.
"""

from __future__ import annotations

import pytest
import trio
from libp2p.peer.id import ID

from p2pfl.transport import Libp2pTransport
from tests.transport.libp2p.test_transport import Inbox, _conns, transports

#: How long a link may take to heal: the topic loop checks every second (``topic_sync_interval``).
HEAL_S = 5.0


async def _subscribed_both_ways(a: Libp2pTransport, b: Libp2pTransport, timeout: float) -> None:
    with trio.fail_after(timeout):
        while b.peer_id not in a.listeners() or a.peer_id not in b.listeners():
            await trio.sleep(0.02)


async def _gossip_flows_both_ways(a: Libp2pTransport, b: Libp2pTransport, n: int = 3) -> None:
    """Every one of ``n`` announcements of each end reaches the other."""
    boxes = Inbox(), Inbox()
    a.set_gossip_handler(boxes[0])
    b.set_gossip_handler(boxes[1])
    for i in range(n):
        await a.broadcast(b"a%d" % i)
        await b.broadcast(b"b%d" % i)
    await boxes[0].wait_for(n)
    await boxes[1].wait_for(n)


async def _streams_on_live_connections(a: Libp2pTransport, b: Libp2pTransport, timeout: float) -> None:
    """Until each end's pubsub stream to the other rides an open connection (found out without a write)."""

    def live(t: Libp2pTransport, other: Libp2pTransport) -> bool:
        pid = ID.from_base58(other.peer_id)
        stream = t._pubsub.peers.get(pid)
        conns = t.host.get_network().get_connections(pid)
        return stream is not None and any(c.muxed_conn is stream.muxed_conn for c in conns if not c.is_closed)

    with trio.fail_after(timeout):
        while not (live(a, b) and live(b, a)):
            await trio.sleep(0.02)


def _no_resync(patch: pytest.MonkeyPatch) -> None:
    patch.setattr(Libp2pTransport, "_on_connection_change", lambda self, conn, closed: None)


async def test_a_peer_whose_subscriptions_were_forgotten_announces_them_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``a`` forgets ``b``'s subscriptions while the link stays, as py-libp2p does when a stream of ``b``'s on
    an old connection fails after the new one is up. ``a`` reopens its stream; ``b``, whose stream survived,
    used not to announce again: ``a`` never sent ``b`` an announcement again."""
    async with transports(2) as (a, b):
        _no_resync(monkeypatch)
        await a.connect(b.listen_addrs[0])
        await _subscribed_both_ways(a, b, HEAL_S)
        a._pubsub._handle_dead_peer(ID.from_base58(b.peer_id))
        assert b.peer_id not in a.listeners()  # the state under test
        await _subscribed_both_ways(a, b, HEAL_S)
        await _gossip_flows_both_ways(a, b)


async def test_a_pubsub_stream_left_on_a_closed_connection_moves_to_the_live_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both ends dial at once and keep both connections; then the one carrying ``a``'s pubsub stream closes.
    Pubsub saw a connection left, so it kept the stream on the dead one until a write found it out, and then
    forgot ``b``'s subscriptions: gossip from ``a`` to ``b`` stopped for good (unless ``b``'s own stream had
    died too)."""
    async with transports(2) as (a, b):
        _no_resync(monkeypatch)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.connect, b.listen_addrs[0])
            nursery.start_soon(b.connect, a.listen_addrs[0])
        with trio.fail_after(HEAL_S):
            while _conns(a, b) < 2 or _conns(b, a) < 2:
                await trio.sleep(0.02)
        await _subscribed_both_ways(a, b, HEAL_S)
        bid = ID.from_base58(b.peer_id)
        stream = a._pubsub.peers[bid]
        carrier = [c for c in a.host.get_network().get_connections(bid) if c.muxed_conn is stream.muxed_conn]
        assert len(carrier) == 1
        await carrier[0].close()
        assert _conns(a, b) == 1
        await _streams_on_live_connections(a, b, HEAL_S)  # before any write could find the dead stream out
        await _subscribed_both_ways(a, b, HEAL_S)
        await _gossip_flows_both_ways(a, b)
