"""``Libp2pTransport.forget``: the engine forgot a banned identity (p2pfl/protocol/churn.py), so the transport
drops its block and the gossipsub penalty kept for it. An identity blocked while never connected (a relayed
sender) kept its penalty for ever: the router drops a peer's scores only when it disconnects. 127.0.0.1
only."""

from __future__ import annotations

from tests.transport.libp2p.test_transport import transports


async def test_a_forgotten_identity_keeps_no_block_and_no_penalty() -> None:
    async with transports(2) as (a, b):
        await b.block(a.peer_id)  # never connected: only relayed messages of it were seen
        assert b.peer_score(a.peer_id) < 0
        b.forget(a.peer_id)
        assert b.peer_score(a.peer_id) == 0.0
        await a.connect(b.listen_addrs[0])  # not refused: it is a new identity again
        assert a.connected_peers() == [b.peer_id]
