"""The peer's periodic housekeeping runs only when it has work: re-dialling static peers, refreshing
``status.json``, logging the status line. Without any of them it is not started (10,000 memory-engine peers
in one process paid a wake-up each per ``reconnect_interval_s`` for nothing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from p2pfl.identity import Identity
from p2pfl.peer import Peer, PeerConfig
from p2pfl.sim.data import peer_splits
from p2pfl.transport.memory import MemoryNetwork
from tests.test_peer import learner_for


def _peer(i: int, net: MemoryNetwork, **cfg: Any) -> Peer:
    splits = peer_splits("digits", 2, partition_kind="iid", seed=3)
    config = PeerConfig(network_id="digits", **{"status_interval_s": 0, **cfg})
    return Peer(
        config,
        learner_for(splits[i], i),
        Identity(bytes([i + 1]) * 32),
        transport=lambda ident: net.open(network_id="digits", seed=ident.seed),
    )


def _tasks(peer: Peer) -> list[str]:
    assert peer._nursery is not None
    return [t.name for t in peer._nursery.child_tasks]


async def test_no_housekeeping_task_without_work() -> None:
    async with _peer(0, MemoryNetwork()) as peer:
        assert not any("_housekeeping" in name for name in _tasks(peer))


async def test_static_peers_are_redialled() -> None:
    """A static peer that comes up after us is dialled by the housekeeping."""
    net = MemoryNetwork()
    later = Identity(bytes([2]) * 32).peer_id
    cfg = {"static_peers": (f"memory/{later}",), "reconnect_interval_s": 0.5}
    async with _peer(0, net, **cfg) as peer:
        assert any("_housekeeping" in name for name in _tasks(peer))
        assert peer.transport.connected_peers() == []
        async with _peer(1, net):
            with trio.move_on_after(10):
                while not peer.transport.connected_peers():
                    await trio.sleep(0.1)
            assert peer.transport.connected_peers() == [later]


async def test_status_json_is_refreshed_with_a_state_dir(tmp_path: Path) -> None:
    """With a state directory, status.json is written without any round (by the housekeeping)."""
    status = tmp_path / "status.json"
    async with _peer(0, MemoryNetwork(), state_dir=tmp_path, reconnect_interval_s=0.2):
        assert not status.exists()
        with trio.move_on_after(10):
            while not status.exists():
                await trio.sleep(0.05)
        assert json.loads(status.read_text())["round"] == 0


async def test_the_housekeeping_rewrites_status_json_only_when_it_changed(tmp_path: Path) -> None:
    """Each write is a thread hand-off, a rename and a directory fsync: an unchanged status is not written
    again, a changed one is, within a housekeeping period or so."""
    status = tmp_path / "status.json"
    async with _peer(0, MemoryNetwork(), state_dir=tmp_path, reconnect_interval_s=0.05) as peer:
        with trio.move_on_after(10):
            while not status.exists():
                await trio.sleep(0.01)
        writes: list[bytes] = []
        inner = peer.store.write_status

        def counting(data: bytes) -> None:
            inner(data)
            writes.append(data)  # after the file is replaced: the test reads it as soon as it sees this

        peer.store.write_status = counting  # type: ignore[method-assign]
        await trio.sleep(0.6)  # about 12 housekeeping periods, nothing changes
        assert writes == []
        peer.engine.duplicates += 1  # a counter status.json reports
        with trio.move_on_after(10):
            while not writes:
                await trio.sleep(0.01)
        assert len(writes) == 1
        assert json.loads(status.read_text())["duplicates"] == 1


async def test_a_higher_peer_id_whose_lower_static_peer_never_dials_connects_after_the_grace() -> None:
    """Of a static pair the lower peer id dials first (p2pfl.protocol.dialling). A peer listing a lower one
    that does not list it dials once the grace is over, not a whole housekeeping period later."""
    net = MemoryNetwork()
    higher, lower = sorted((0, 1), key=lambda i: Identity(bytes([i + 1]) * 32).peer_id, reverse=True)
    lower_id = Identity(bytes([lower + 1]) * 32).peer_id
    cfg = {"static_peers": (f"memory/{lower_id}",), "reconnect_interval_s": 600.0, "status_interval_s": 600.0}
    async with _peer(lower, net), _peer(higher, net, **cfg) as peer:
        assert peer.transport.connected_peers() == []  # not dialled at once: the lower one may be dialling
        with trio.move_on_after(30):
            while not peer.transport.connected_peers():
                await trio.sleep(0.05)
        assert peer.transport.connected_peers() == [lower_id]
