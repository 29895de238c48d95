"""Real peer code over the in-memory transport against a neighbour that floods and equivocates: the honest
rounds go on, the flood is dropped before signatures are checked and costs no fetches, and the equivocator
is convicted by both honest peers (the second one hears it only through the first: relayed messages or
its proof)."""

from __future__ import annotations

import trio

from p2pfl.identity import Identity
from p2pfl.peer_store import now_ms
from p2pfl.protocol import DELTA_PROTOCOL, SNAPSHOT_PROTOCOL
from p2pfl.sim.data import peer_splits
from p2pfl.transport.memory import MemoryNetwork
from p2pfl.wire import Header, encode_tensors, seal
from tests.test_peer import memory_peers, run_all

FLOODER = Identity(bytes([0xEE]) * 32)
BURST = 10_000


def announcement(arch: bytes, size: int, seq: int, n: int) -> bytes:
    header = Header(
        kind="delta",
        network_id="digits",
        sender=FLOODER.peer_id,
        seq=seq,
        base=bytes(32),
        result=n.to_bytes(32, "big"),
        arch=arch,
        payload_digest=(n + 1).to_bytes(32, "big"),
        payload_size=size,
        timestamp_ms=now_ms(),  # fresh: a flood of stale ones would be refused before the rate limits
    )
    return seal(FLOODER, header, None)  # header only: each would start a payload fetch


async def test_a_flood_of_signed_announcements_does_not_stall_the_rounds() -> None:
    splits = peer_splits("digits", 2, partition_kind="iid", seed=1)
    net = MemoryNetwork()
    requests: list[str] = []

    async def serve(peer: str, request: bytes) -> bytes:
        requests.append(peer)
        raise RuntimeError("nothing to serve")

    async with (
        memory_peers(2, splits, net, scoring_enabled=False, max_round_wait_s=0.5) as peers,
        net.open(network_id="digits", seed=FLOODER.seed) as h,
    ):
        h.set_request_handler(SNAPSHOT_PROTOCOL, serve)
        h.set_request_handler(DELTA_PROTOCOL, serve)
        await h.connect(f"memory/{peers[0].peer_id}")  # the flooder reaches peer 1 only through peer 0
        a = peers[0].engine
        size = len(encode_tensors(a.layout.unflatten(a.own)))
        flood = [announcement(a.layout.arch, size, seq=1 + i, n=i) for i in range(BURST)]
        # then one version signed twice, with two models, once the buckets refilled a little
        pair = [announcement(a.layout.arch, size, seq=2 * BURST, n=BURST + k) for k in (1, 2)]
        b = peers[1].engine
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_all, peers, 6)
                for i, data in enumerate(flood):
                    await h.broadcast(data)
                    if i % 500 == 0:
                        await trio.sleep(0)
                await trio.sleep(1.0)
                for data in pair:
                    await h.broadcast(data)
            while not b.bans.convicted(FLOODER.peer_id):  # bounded by fail_after
                await trio.sleep(0.05)
        assert [6, 6] == [p.round for p in peers]
        dropped = a.rejections["rate_limited"] + a.rejections["rate_limited_relay"]
        cfg = a.rates.cfg
        assert dropped >= BURST - cfg.relay_burst - cfg.sender_burst - 10 * cfg.relay_rate
        assert len(requests) <= 10  # snapshot requests: at most one per retry interval, never one per message
        # the two signed headers of one version convicted the flooder at peer 0, and peer 1 (which the flooder
        # is not connected to) too; no honest peer is blamed for relaying
        assert "equivocation" == a.bans.convicted(FLOODER.peer_id) == b.bans.convicted(FLOODER.peer_id)
        assert peers[0].peer_id not in b.rejections_by_peer
        assert peers[1].peer_id not in a.rejections_by_peer
