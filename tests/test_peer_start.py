"""Which connections let a peer start learning: only learners of its own network count towards
``min_neighbours``. A peer whose only connections were another network's peers (everyone dials everyone in the
two-networks CLI test) used to start alone after the subscription wait and run solo rounds beside them."""

from __future__ import annotations

import trio
import trio.testing

from p2pfl.identity import Identity
from p2pfl.peer import Peer, PeerConfig
from p2pfl.sim.data import peer_splits
from p2pfl.transport.memory import MemoryNetwork

from .test_peer import inline, learner_for


def _peer(i: int, network_id: str, net: MemoryNetwork) -> Peer:
    split = peer_splits("digits", 3, partition_kind="iid", seed=1)[i]
    config = PeerConfig(
        network_id=network_id, status_interval_s=0, local_steps=2, min_neighbours=1, start_timeout_s=60
    )
    return Peer(
        config,
        learner_for(split, i),
        Identity(bytes([i + 1]) * 32),
        transport=lambda ident: net.open(network_id=network_id, seed=ident.seed),
        run_sync=inline,
    )


async def test_another_networks_peer_never_counts_towards_min_neighbours(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    async with _peer(0, "alpha", net) as alpha, _peer(1, "beta", net) as beta, _peer(2, "alpha", net) as mate:
        await alpha.connect(f"memory/{beta.peer_id}")
        assert [beta.peer_id] == alpha.neighbours()
        assert [] == alpha.transport.listeners()  # beta's announcements are on beta's topics
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(alpha.run, 1)
                await trio.sleep(30.0)  # far past the subscription wait (subscribe_grace_s + 1 s)
                assert 0 == alpha.round  # still waiting for a learner of its own network
                await alpha.connect(f"memory/{mate.peer_id}")
                nursery.start_soon(mate.run, 1)
        assert 1 == alpha.round
        assert mate.peer_id in alpha.engine.replicas
        assert beta.peer_id not in alpha.engine.replicas
        assert 0 == alpha.rounds.solo.tracker.total  # its round mixed its own network's learner
