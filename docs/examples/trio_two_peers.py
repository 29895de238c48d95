"""Two peers in one trio program, over real libp2p on 127.0.0.1: the native way to embed p2pfl.

Run: python docs/examples/trio_two_peers.py   (a few seconds; prints each peer's test accuracy)

A real deployment runs one peer per process or machine; the code of each is the ``async with`` block below.
"""

from __future__ import annotations

import trio
from _digits import N_CLASSES, peer_data

import p2pfl

ROUNDS = 10


def make_peer(index: int) -> tuple[p2pfl.Peer, p2pfl.Dataset]:
    train, val, test = peer_data(index, num_peers=2)
    learner = p2pfl.NumpySoftmaxLearner(train, val, N_CLASSES, hidden=32, seed=index)
    config = p2pfl.PeerConfig(
        network_id="digits-demo",  # peers only talk to peers of the same network id
        listen="/ip4/127.0.0.1/tcp/0",  # port 0: the OS picks a free port
        local_steps=20,  # SGD steps per round
        max_round_wait_s=2.0,  # wait at most this long per round for a neighbour's new version
        status_interval_s=0,  # no periodic status log lines
    )
    # No identity given: a fresh Ed25519 key. A service keeps one (p2pfl.load_key / p2pfl.save_key).
    return p2pfl.Peer(config, learner, p2pfl.Identity.generate()), test


async def main() -> None:
    (peer_a, test), (peer_b, _) = make_peer(0), make_peer(1)
    async with peer_a, peer_b:  # both online: listening, joined to the network's gossip topic
        print("peer A", peer_a.peer_id, "listens on", peer_a.listen_addrs[0])
        await peer_b.connect(peer_a.listen_addrs[0])  # or PeerConfig(static_peers=(...,))
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:  # both run their rounds concurrently
                nursery.start_soon(peer_a.run, ROUNDS)
                nursery.start_soon(peer_b.run, ROUNDS)
        for name, peer in (("A", peer_a), ("B", peer_b)):
            report = peer.reports[-1]
            assert isinstance(peer.learner, p2pfl.NumpySoftmaxLearner)
            acc = peer.learner.evaluate_on(test, peer.params()).accuracy
            print(
                f"peer {name}: round={report.round} neighbours={report.neighbours} "
                f"mixed={report.mixed} val_acc={report.val_accuracy:.3f} test_acc={acc:.3f}"
            )
    # leaving the block closed both peers cleanly (connections, gossip, tasks)


if __name__ == "__main__":
    trio.run(main)
