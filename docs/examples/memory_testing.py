"""Testing your own code against p2pfl without sockets: the in-memory transport.

Run: python docs/examples/memory_testing.py    (well under a second after imports)
or:  pytest docs/examples/memory_testing.py   (pytest-trio in trio mode runs the ``async def test_*``)

``p2pfl.MemoryNetwork`` connects any number of peers inside one trio loop. The peers run exactly the code
they run over libp2p (signed envelopes, aggregation, scoring, checkpoints); only the transport differs. Pass
``transport=lambda identity: net.open(network_id=..., seed=identity.seed)`` to ``p2pfl.Peer`` and connect
peers by ``"memory/<peer id>"``. No ports, no libp2p import, deterministic identities if you like.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio
from _digits import N_CLASSES, peer_data

import p2pfl

NETWORK = "app-test"


# ---- the host application's code under test -------------------------------------------------------------


async def train_and_report(peer: p2pfl.Peer, rounds: int, dashboard: list[tuple[int, float]]) -> float:
    """Application logic: run rounds one at a time, report each one's validation accuracy, return the last."""
    for _ in range(rounds):
        [report] = await peer.run(1)  # run(rounds) or run(until=...) would do all at once
        dashboard.append((report.round, report.val_accuracy or 0.0))
    return dashboard[-1][1]


# ---- the test harness ------------------------------------------------------------------------------------


@asynccontextmanager
async def memory_peers(n: int) -> AsyncIterator[list[p2pfl.Peer]]:
    """``n`` fully connected peers on one MemoryNetwork."""
    net = p2pfl.MemoryNetwork()
    config = p2pfl.PeerConfig(network_id=NETWORK, local_steps=10, max_round_wait_s=1.0, status_interval_s=0)
    async with AsyncExitStack() as stack:
        peers = []
        for i in range(n):
            train, val, _ = peer_data(i, num_peers=n)
            peer = p2pfl.Peer(
                config,
                p2pfl.NumpySoftmaxLearner(train, val, N_CLASSES, hidden=32, seed=i),
                p2pfl.Identity(bytes([i + 1]) * 32),  # fixed seeds: the same peer ids on every run
                transport=lambda identity: net.open(network_id=NETWORK, seed=identity.seed),
            )
            peers.append(await stack.enter_async_context(peer))
        for i, a in enumerate(peers):
            for b in peers[i + 1 :]:
                await a.connect(f"memory/{b.peer_id}")  # a chose b
                b.choose([a.peer_id])  # and b chose a: each peer mixes only the links it chose
        yield peers


async def test_every_peer_reaches_the_target() -> None:
    async with memory_peers(3) as peers:
        dashboards: list[list[tuple[int, float]]] = [[] for _ in peers]
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for peer, dashboard in zip(peers, dashboards, strict=True):
                    nursery.start_soon(train_and_report, peer, 12, dashboard)
        for peer, dashboard in zip(peers, dashboards, strict=True):
            status = peer.status()
            print(f"peer {peer.peer_id[-6:]}: round={status['round']} val_acc={status['val_accuracy']:.3f}")
            assert [r for r, _ in dashboard] == list(range(1, 13))
            assert dashboard[-1][1] >= 0.85
            assert status["neighbours"] == 2
            assert status["rejected"] == {}  # honest peers: no envelope was refused


if __name__ == "__main__":
    trio.run(test_every_peer_reaches_the_target)
    print("ok")
