"""A peer over libp2p refuses a flooding sender where its messages are read, before py-libp2p spawns a task
and verifies a signature for each (issue 15): the peer wires its exchange's early gate and origin-aware
validator into the libp2p transport."""

from __future__ import annotations

import trio

from p2pfl.identity import Identity
from p2pfl.peer import Peer, PeerConfig
from p2pfl.sim.data import peer_splits
from p2pfl.transport.libp2p import Libp2pTransport

from .test_peer import learner_for


async def test_a_libp2p_peer_gates_gossip_by_sender_before_the_library_verifies_it() -> None:
    split = peer_splits("digits", 2, partition_kind="iid", seed=1)[0]
    config = PeerConfig(network_id="gate", listen="/ip4/127.0.0.1/tcp/0", status_interval_s=0)
    peer = Peer(config, learner_for(split, 0), Identity(bytes([7]) * 32))
    with trio.fail_after(30):
        async with peer:
            t = peer._transport
            assert isinstance(t, Libp2pTransport)
            outsider = Identity(bytes([9]) * 32).peer_id
            assert t._gate is not None and t._gate(outsider)  # a sender with tokens is read
            # a burst from one publisher: its token bucket runs dry within the burst and the rest is dropped
            # where it is read (bounded: 10,000 messages in a moment of trio time)
            admitted = sum(t._gate(outsider) for _ in range(10_000))
            assert 1 <= admitted < 1_000, admitted
            assert peer.engine.rejections["rate_limited_publisher"] >= 9_000
            assert t._validate_from is not None
