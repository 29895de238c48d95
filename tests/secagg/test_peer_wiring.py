"""How a peer uses its group: it publishes and keeps the group's mean, never its trained model; a fellow
member's replica leaves its mix; a failed group round republishes the model the round started from."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import trio

from p2pfl.identity import Identity
from p2pfl.peer import Peer, PeerConfig
from p2pfl.protocol import Replica
from p2pfl.transport.memory import MemoryNetwork

from ..test_peer_round import ScriptedLearner


class FakeGroup:
    """A group whose round returns ``result`` (None: the round failed); records what it was given."""

    def __init__(self, result: npt.NDArray[np.float32] | None, fellows: frozenset[str] = frozenset()) -> None:
        self.result = result
        self.given: list[tuple[int, npt.NDArray[np.float32]]] = []
        self._fellows = fellows | {"fellow"}

    def is_fellow(self, peer_id: str) -> bool:
        return peer_id in self._fellows

    def fellows(self) -> frozenset[str]:
        return self._fellows

    async def mean(self, round_: int, vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32] | None:
        self.given.append((round_, vector.copy()))
        return self.result


def _peer() -> Peer:
    config = PeerConfig(
        network_id="digits", status_interval_s=0, min_neighbours=0, mix_scope="all", scoring_enabled=False
    )
    net = MemoryNetwork()
    return Peer(
        config,
        ScriptedLearner([0.9, 0.8]),
        Identity(b"\x02" * 32),
        transport=lambda i: net.open(network_id="digits", seed=i.seed),
    )


def _replica(peer: Peer, name: str, value: float) -> None:
    vec = np.full(peer.engine.layout.size, value, np.float32)
    peer.engine.replicas[name] = Replica(name, vec, 1, peer.engine.layout.digest(vec), trio.current_time())


async def test_a_member_publishes_and_keeps_the_group_mean_not_its_trained_model() -> None:
    peer = _peer()
    group = FakeGroup(np.full(4, 0.25, np.float32))
    peer.secagg = group  # type: ignore[assignment]
    async with peer:
        _replica(peer, "fellow", 5.0)  # a fellow's (stale) group mean: must not enter the mix
        await peer.step()
        assert [r for r, _v in group.given] == [1]
        assert np.array_equal(group.given[0][1], np.full(4, 0.9, np.float32))  # the trained model
        assert np.allclose(peer.engine.public, 0.25)  # what the network got
        assert np.allclose(peer.engine.own, 0.25)  # what the next round trains from


async def test_an_outsider_is_still_mixed_with_the_group_mean() -> None:
    peer = _peer()
    peer.secagg = FakeGroup(np.full(4, 0.25, np.float32))  # type: ignore[assignment]
    async with peer:
        _replica(peer, "outsider", 0.75)
        await peer.step()
        assert np.allclose(peer.engine.public, 0.25)
        assert 0.25 < float(peer.engine.own[0]) <= 0.75  # the mix moved towards the outsider


async def test_a_failed_group_round_republishes_the_starting_model() -> None:
    peer = _peer()
    peer.secagg = FakeGroup(None)  # type: ignore[assignment]
    async with peer:
        start = peer.engine.own.copy()
        await peer.step()
        assert np.array_equal(peer.engine.public, start)  # not the trained 0.9


async def test_members_send_each_other_no_announcements_and_still_gossip_with_outsiders() -> None:
    """Fellow members hold the same group mean: neither their announcements nor a relay's copies reach each
    other (the bytes of plain gossip on top of the group's exchange), while an outsider gets both members'
    means and the members get the outsider's model to mix. Their rounds do not wait for each other."""
    net = MemoryNetwork()
    ids = [Identity(bytes([i + 10]) * 32) for i in range(3)]
    a, b, c = (i.peer_id for i in ids)
    config = PeerConfig(
        network_id="digits", status_interval_s=0, min_neighbours=0, mix_scope="all", scoring_enabled=False
    )
    peers = [
        Peer(
            config,
            ScriptedLearner([0.9, 0.8]),
            i,
            transport=lambda i: net.open(network_id="digits", seed=i.seed),
        )
        for i in ids
    ]
    peers[0].secagg = FakeGroup(np.full(4, 0.25, np.float32), frozenset({b}))  # type: ignore[assignment]
    peers[1].secagg = FakeGroup(np.full(4, 0.25, np.float32), frozenset({a}))  # type: ignore[assignment]
    async with peers[0], peers[1], peers[2]:
        await peers[0].connect(f"memory/{b}")
        await peers[0].connect(f"memory/{c}")
        await peers[1].connect(f"memory/{c}")
        assert sorted(peers[0].transport.listeners()) == [c]  # b muted a: a's publishes do not reach it
        with trio.fail_after(5):
            # all at once, as peers run: with ``wait_before_mix`` a step waits for its outsider's version
            async with trio.open_nursery() as n:
                for p in peers:
                    n.start_soon(p.step)
            while len(peers[2].engine.replicas) < 2 or len(peers[0].engine.replicas) < 1:
                await trio.sleep(0.01)
            await trio.sleep(0.1)  # any relayed copy would have arrived by now
        assert set(peers[2].engine.replicas) == {a, b}  # the outsider hears both members
        for member, fellow in ((peers[0], b), (peers[1], a)):
            assert set(member.engine.replicas) == {c}  # the outsider's model, never the fellow's mean
            assert member.transport.stats.messages_received == 1, (fellow, member.transport.stats)
