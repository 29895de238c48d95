"""Gossip for small known neighbourhoods (``compat.LeanGossipSub``): a publish reaches each subscriber of
the publisher's topic once, directly; nobody relays; control RPCs carry no peer record. The legacy
behaviour (``gossip_relay``, lazy gossip, opportunistic grafting, peer records: py-libp2p's defaults) is the
control each test is checked against."""

from __future__ import annotations

from dataclasses import replace

import trio

from p2pfl.transport import Libp2pConfig, Libp2pTransport
from tests.transport.libp2p.test_transport import FAST, Inbox, transports

LEGACY = replace(
    FAST,
    gossip_relay=True,
    gossip_lazy_peers=None,
    opportunistic_graft=True,
    gossip_peer_records=True,
    mesh_degree=6,
    mesh_degree_low=4,
    mesh_degree_high=12,
)
SIZE = 20_000


async def _complete(ts: tuple[Libp2pTransport, ...]) -> None:
    for i, a in enumerate(ts):
        for b in ts[i + 1 :]:
            await a.connect(b.listen_addrs[0])
    with trio.fail_after(10):
        for t in ts:  # every peer subscribed to every other's topic, and known as a listener
            while len(t.listeners()) < len(ts) - 1 or len(t.subscribed_peers()) < len(ts) - 1:
                await trio.sleep(0.02)


async def _publish_once(config: Libp2pConfig) -> tuple[list[int], list[Inbox], str]:
    """Five peers, complete graph; the first publishes one message. Publish bytes each peer queued."""
    async with transports(5, config) as ts:
        await _complete(ts)
        boxes = [Inbox() for _ in ts]
        for t, box in zip(ts, boxes, strict=True):
            t.set_gossip_handler(box)
        before = [t.stats.gossip_sent_by.get("publish", 0) for t in ts]
        await ts[0].broadcast(b"x" * SIZE)
        for box in boxes[1:]:
            await box.wait_for(1)
        await trio.sleep(1.0)  # relays, if any, have happened
        after = [t.stats.gossip_sent_by.get("publish", 0) for t in ts]
        return [a - b for a, b in zip(after, before, strict=True)], boxes, ts[0].peer_id


async def test_a_publish_reaches_each_subscriber_once_without_relays() -> None:
    sent, boxes, publisher = await _publish_once(FAST)
    assert all([fwd for fwd, _ in box.items] == [publisher] for box in boxes[1:])  # once, from the source
    assert 4 * SIZE <= sent[0] < 4 * (SIZE + 1024)  # one copy per subscriber, all from the publisher
    assert sent[1:] == [0, 0, 0, 0]  # nobody relays


async def test_control_the_legacy_router_relays_copies() -> None:
    """The same run with py-libp2p's behaviour: the receivers forward copies (what the lean router saves)."""
    sent, boxes, _ = await _publish_once(LEGACY)
    assert all(len(box.items) == 1 for box in boxes[1:])  # delivered once to the app, but sent many times
    assert sum(sent[1:]) >= SIZE


async def test_control_rpcs_carry_no_peer_record() -> None:
    """py-libp2p attaches a signed peer record (~250 bytes) to every RPC; lean: with the hello only."""
    for config, expect_records in ((FAST, False), (LEGACY, True)):
        async with transports(3, config) as ts:
            await _complete(ts)
            for t in ts:
                await t.broadcast(b"m")
            await trio.sleep(1.5)  # a heartbeat or two of control traffic
            record = sum(t.stats.gossip_sent_by.get("record", 0) for t in ts)
            publish = sum(t.stats.gossip_sent_by.get("publish", 0) for t in ts)
            assert publish > 0
            # the "record" part is the RPC framing around messages plus any peer record
            assert (record > 200 * 3) is expect_records, (config.gossip_peer_records, record)
