"""Discovery tells the peer which links it chose (``mix_scope = "chosen"``): each peer it dialled, from the
registries' records or as a rotation's candidate, and none it failed to dial."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from p2pfl.errors import TransportError
from p2pfl.identity import Identity
from p2pfl.peer import PeerConfig
from p2pfl.peer_discovery import PeerDiscovery


@dataclass
class _Record:
    peer_id: str
    addrs: tuple[str, ...]


class _Transport:
    def __init__(self, up: set[str]) -> None:
        self.up, self.linked = up, []

    async def connect(self, addr: str) -> str:
        pid = addr.rsplit("/", 1)[-1]
        if pid not in self.up:
            raise TransportError(f"dial {addr} failed")
        self.linked.append(pid)
        return pid

    def connected_peers(self) -> list[str]:
        return list(self.linked)


class _Client:
    registry_peer_ids: frozenset[str] = frozenset()

    def __init__(self, records: list[_Record]) -> None:
        self.records = records

    async def find_peers(self) -> list[_Record]:
        return self.records


def test_discovery_reports_the_peers_it_linked_as_chosen() -> None:
    transport = _Transport(up={"b", "c"})
    chosen: list[str] = []
    discovery = PeerDiscovery(
        PeerConfig(network_id="n", max_neighbours=4),
        Identity(bytes([1]) * 32),
        lambda: transport,  # type: ignore[arg-type,return-value]
        may_dial=lambda pid: pid != "c",
        unexpected=lambda *a: None,
        chose=chosen.append,
    )
    records = [_Record(p, (f"/memory/{p}",)) for p in ("a", "b", "c", "d")]
    discovery.client = _Client(records)

    async def main() -> None:
        assert await discovery.discover() == 1  # a and d are down, c may not be dialled
        assert chosen == ["b"]
        transport.up.add("a")
        dials = await discovery.rotation_candidates()
        assert await dials["a"]()
        assert not await dials["d"]()
        assert chosen == ["b", "a"]

    trio.run(main)


def test_the_chosen_set_is_bounded_keeping_static_peers_and_the_newest() -> None:
    from p2pfl.peer import MAX_CHOSEN, Peer
    from p2pfl.sim.data import peer_splits

    from .test_peer import learner_for

    static = f"/ip4/127.0.0.1/tcp/4001/p2p/{Identity(bytes([3]) * 32).peer_id}"
    peer = Peer(
        PeerConfig(network_id="n", static_peers=(static,), mix_scope="chosen"),
        learner_for(peer_splits("digits", 2, seed=1)[0], 0),
        Identity(bytes([1]) * 32),
    )
    peer.choose(f"p{i}" for i in range(MAX_CHOSEN))
    assert len(peer.chosen) == MAX_CHOSEN + 1  # with the static peer
    peer.choose(iter(["new"]))
    assert peer.chosen == {Identity(bytes([3]) * 32).peer_id, "new"}  # nothing connected: the rest goes


def test_with_chosen_links_only_the_peers_it_chose_count_toward_the_degree() -> None:
    """``mix_scope = "chosen"``: links other peers dialled are not learning links, so discovery still
    dials up to ``learning_degree`` of its own; an inbound peer the random draw reaches is chosen without
    a second dial."""
    transport = _Transport(up={"a", "b", "c", "d", "e"})
    transport.linked = ["x", "y", "a"]  # three peers dialled us
    mine: set[str] = set()
    discovery = PeerDiscovery(
        PeerConfig(network_id="n", max_neighbours=3, mix_scope="chosen"),
        Identity(bytes([1]) * 32),
        lambda: transport,  # type: ignore[arg-type,return-value]
        may_dial=lambda pid: True,
        unexpected=lambda *a: None,
        chose=mine.add,
        counts=mine.__contains__,
    )
    discovery.client = _Client([_Record(p, (f"/memory/{p}",)) for p in ("a", "b", "c", "d", "e")])

    async def main() -> None:
        assert await discovery.discover() == 3
        assert len(mine) == 3 and mine <= {"a", "b", "c", "d", "e"}
        dialled = transport.linked[3:]
        assert sorted(dialled) == sorted(mine - {"a"})  # a was already linked: chosen, not dialled again
        assert await discovery.discover() == 0  # the degree is reached

    trio.run(main)


def test_counting_every_link_an_inbound_peer_fills_the_degree() -> None:
    transport = _Transport(up={"a", "b"})
    transport.linked = ["x", "y"]
    discovery = PeerDiscovery(
        PeerConfig(network_id="n", max_neighbours=2),
        Identity(bytes([1]) * 32),
        lambda: transport,  # type: ignore[arg-type,return-value]
        may_dial=lambda pid: True,
        unexpected=lambda *a: None,
    )
    discovery.client = _Client([_Record(p, (f"/memory/{p}",)) for p in ("a", "b")])
    assert trio.run(discovery.discover) == 0
