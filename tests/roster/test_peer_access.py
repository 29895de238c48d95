"""A closed network over the in-memory transport: the real peer code gating on its roster."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pfl.errors import ConfigError, TransportError
from p2pfl.peer import PeerConfig
from p2pfl.roster import RosterError
from p2pfl.sim.data import peer_splits
from p2pfl.transport.memory import MemoryNetwork
from tests.roster.peers import closed_peer, ident, roster_of, wall_ms, write_roster
from tests.test_peer import link, run_all


def memory(net: MemoryNetwork) -> Any:
    return lambda identity: net.open(network_id="net", seed=identity.seed)


async def wait_for(cond: Any, seconds: float = 20.0) -> None:
    with trio.fail_after(seconds):
        while not cond():
            await trio.sleep(0.05)


async def test_members_learn_together_and_a_non_member_is_refused_and_counted(tmp_path: Path) -> None:
    splits = peer_splits("digits", 4, partition_kind="iid", seed=3)
    net = MemoryNetwork()
    path = write_roster(tmp_path / "roster.bin", roster_of([0, 1, 2]))
    async with AsyncExitStack() as stack:
        peers = [
            await stack.enter_async_context(closed_peer(i, splits[i], memory(net), path)) for i in range(3)
        ]
        outsider = await stack.enter_async_context(closed_peer(3, splits[3], memory(net), None))
        await link(peers[0], peers[1])
        await link(peers[1], peers[2])
        for target in peers:
            with pytest.raises(TransportError, match="refused"):
                await outsider.connect(f"memory/{target.peer_id}")
        with trio.fail_after(60):
            await run_all(peers, 3)
        for p in peers:
            access = p.status()["access"]
            assert access["version"] == 1 and access["expired"] is False
            assert outsider.peer_id not in p.engine.replicas
        assert {peers[0].peer_id, peers[2].peer_id} == set(peers[1].engine.replicas)
        refused = peers[0].status()["access"]["refused"]
        assert refused.get("not_member", 0) >= 1
        assert outsider.transport.stats.requests_served == 0  # no byte of its model was asked for
        # an announcement of the outsider that reaches a member anyway (a relay) is refused before any fetch
        before = peers[0].engine.rejections["sender_not_allowed"]
        env = outsider.engine.serve_snapshot(0)
        peers[0].engine.handle_snapshot(env, outsider.peer_id, 0.0)
        assert peers[0].engine.rejections["sender_not_allowed"] == before + 1
        assert outsider.peer_id not in peers[0].engine.replicas


async def test_a_revocation_spreads_from_one_peer_and_disconnects_the_revoked(tmp_path: Path) -> None:
    splits = peer_splits("digits", 3, partition_kind="iid", seed=4)
    net = MemoryNetwork()
    files = [write_roster(tmp_path / f"roster{i}.bin", roster_of([0, 1, 2])) for i in range(3)]
    async with AsyncExitStack() as stack:
        a, b, c = [
            await stack.enter_async_context(
                closed_peer(i, splits[i], memory(net), files[i], mix_scope="all", max_staleness_s=3600)
            )
            for i in range(3)
        ]
        await a.connect(f"memory/{b.peer_id}")
        await b.connect(f"memory/{c.peer_id}")
        await a.connect(f"memory/{c.peer_id}")
        assert c.peer_id in b.transport.connected_peers()
        with trio.fail_after(60):
            await run_all([a, b, c], 1)
        assert c.peer_id in {r.peer for r in b.engine.mixing_candidates(trio.current_time())}
        # the operator revokes c and drops version 2 at a only; b learns it from a, not from its file
        write_roster(files[0], roster_of([0, 1], version=2, revoked=(2,)))
        await wait_for(lambda: b.status()["access"]["version"] == 2)
        await wait_for(lambda: c.peer_id not in b.transport.connected_peers())
        await wait_for(lambda: c.peer_id not in a.transport.connected_peers())
        assert b.access is not None and files[1].read_bytes() != files[0].read_bytes()  # b's file untouched
        # b still holds c's last model, but never mixes it again (even with mix_scope = "all")
        assert c.peer_id in b.engine.replicas
        assert c.peer_id not in {r.peer for r in b.engine.mixing_candidates(trio.current_time())}
        with pytest.raises(TransportError):
            await c.connect(f"memory/{b.peer_id}")
        assert b.status()["access"]["refused"]["revoked"] >= 1
        # c replays version 1 (which lists it) to b: an older version is never adopted
        assert b.access.take_response(c.peer_id, _response_with(roster_of([0, 1, 2]))) is False
        assert b.status()["access"]["version"] == 2


def _response_with(roster: Any) -> bytes:
    from p2pfl.roster import encode_roster
    from p2pfl.roster.codec import encode_response

    return encode_response(encode_roster(roster), [])


async def test_an_expired_roster_refuses_everyone_loudly_and_a_newer_file_restores(tmp_path: Path) -> None:
    splits = peer_splits("digits", 2, partition_kind="iid", seed=5)
    net = MemoryNetwork()
    path = write_roster(tmp_path / "roster.bin", roster_of([0, 1]))
    other = write_roster(tmp_path / "roster1.bin", roster_of([0, 1]))
    async with (
        closed_peer(0, splits[0], memory(net), path) as a,
        closed_peer(1, splits[1], memory(net), other) as b,
    ):
        await a.connect(f"memory/{b.peer_id}")
        assert a.access is not None
        later = wall_ms() + 2 * 86_400_000
        a.access.now_ms = lambda: later  # two days on: the roster expired
        await wait_for(lambda: not a.transport.connected_peers())
        status = a.status()["access"]
        assert status["expired"] is True and status["refused"]["roster_expired"] >= 1
        with pytest.raises(TransportError):
            await b.connect(f"memory/{a.peer_id}")
        write_roster(path, roster_of([0, 1], version=2, expires_ms=later + 86_400_000))
        await wait_for(lambda: a.status()["access"]["version"] == 2)
        await b.connect(f"memory/{a.peer_id}")
        assert b.peer_id in a.transport.connected_peers()


async def test_the_orgs_and_share_caps_reach_the_engine(tmp_path: Path) -> None:
    splits = peer_splits("digits", 1, partition_kind="iid", seed=6)
    path = write_roster(tmp_path / "roster.bin", roster_of([0, 1], max_share=250_000))
    peer = closed_peer(0, splits[0], memory(MemoryNetwork()), path)
    fed: list[tuple[dict[str, str], dict[str, float]]] = []
    peer.engine.set_groups = lambda groups, caps: fed.append((dict(groups), dict(caps)))  # type: ignore[attr-defined]
    async with peer:
        await wait_for(lambda: bool(fed))
        assert ({ident(0).peer_id: "a", ident(1).peer_id: "a"}, {"a": 0.25}) == fed[0]
        # a node admitted later by its org's certificate joins its org's group at the next refresh
        from p2pfl.roster.codec import encode_cert, encode_response
        from tests.roster.strategies import cert_for

        cert = cert_for(ident(5).peer_id, expires_ms=wall_ms() + 10**6)
        assert peer.access is not None
        peer.access.take_response("n", encode_response(None, [encode_cert(cert)]))
        assert peer.access.allowed(ident(5).peer_id)
        await wait_for(lambda: ident(5).peer_id in fed[-1][0])
        assert "a" == fed[-1][0][ident(5).peer_id]


def test_a_roster_and_open_true_contradict_and_certificates_need_a_roster(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[access\] open: cannot be true"):
        PeerConfig(network_id="net", roster=tmp_path / "r", open_network=True)
    with pytest.raises(ConfigError, match=r"\[access\] certificates: need a roster"):
        PeerConfig(network_id="net", certificates=(tmp_path / "c",))


def test_a_bad_roster_file_stops_the_peer_before_it_starts(tmp_path: Path) -> None:
    splits = peer_splits("digits", 1, partition_kind="iid", seed=7)
    other_net = write_roster(tmp_path / "other.bin", roster_of([0], network_id="elsewhere"))
    with pytest.raises(RosterError, match="not 'net'") as err:
        closed_peer(0, splits[0], memory(MemoryNetwork()), other_net)
    assert err.value.reason == "wrong_network"
    unsigned = write_roster(tmp_path / "unsigned.bin", roster_of([0]).with_member(roster_of([1]).members[0]))
    with pytest.raises(RosterError) as err:
        closed_peer(0, splits[0], memory(MemoryNetwork()), unsigned)
    assert err.value.reason == "unsigned"


def test_an_embedded_peer_runs_open_without_saying_so() -> None:
    config = PeerConfig(network_id="net")
    assert (None, None) == (config.roster, config.open_network)
    splits = peer_splits("digits", 1, partition_kind="iid", seed=8)
    assert closed_peer(0, splits[0], memory(MemoryNetwork()), None).access is None


async def test_a_certified_member_is_admitted_where_its_certificate_has_spread(tmp_path: Path) -> None:
    from p2pfl.roster import save_certificate
    from tests.roster.strategies import cert_for

    splits = peer_splits("digits", 6, partition_kind="iid", seed=9)
    net = MemoryNetwork()
    path = write_roster(tmp_path / "roster.bin", roster_of([0, 1], max_nodes=3))  # 2 listed + 1 certified
    certs = {}
    for i in (4, 5):
        certs[i] = tmp_path / f"peer{i}.cert"
        save_certificate(certs[i], cert_for(ident(i).peer_id, expires_ms=wall_ms() + 86_400_000))
    async with AsyncExitStack() as stack:

        async def start(i: int, held: tuple[Path, ...]) -> Any:
            peer = closed_peer(i, splits[i], memory(net), path, certificates=held)
            return await stack.enter_async_context(peer)

        gateway = await start(0, (certs[4], certs[5]))  # org a's gateway holds its nodes' certificates
        b = await start(1, ())
        e = await start(4, (certs[4],))
        f = await start(5, (certs[5],))
        with pytest.raises(TransportError):  # b has not seen e's certificate (it knows no one yet)
            await e.connect(f"memory/{b.peer_id}")
        assert b.status()["access"]["refused"]["not_member"] >= 1
        await gateway.connect(f"memory/{b.peer_id}")
        await e.connect(f"memory/{gateway.peer_id}")
        with pytest.raises(TransportError):  # a valid certificate, but org a is full (max_nodes = 3)
            await f.connect(f"memory/{gateway.peer_id}")
        assert gateway.status()["access"]["refused"]["org_full"] >= 1
        # b learns e's certificate from the gateway's roster exchange, then admits e
        assert b.access is not None
        await wait_for(lambda: b.access.gate.reason(e.peer_id, wall_ms()) is None)
        await e.connect(f"memory/{b.peer_id}")
        assert e.peer_id in b.transport.connected_peers()
        assert (1, 1) == (b.status()["access"]["certified"], gateway.status()["access"]["certified"])


async def test_a_restart_keeps_the_newest_adopted_roster_not_the_older_file(tmp_path: Path) -> None:
    splits = peer_splits("digits", 1, partition_kind="iid", seed=10)
    path = write_roster(tmp_path / "roster.bin", roster_of([0, 1, 2]))
    state = tmp_path / "state"
    async with closed_peer(0, splits[0], memory(MemoryNetwork()), path, state_dir=state) as peer:
        write_roster(path, roster_of([0, 1], version=2, revoked=(2,)))
        await wait_for(lambda: peer.status()["access"]["version"] == 2)
    write_roster(path, roster_of([0, 1, 2]))  # the old file is back (a restored backup, a stale deploy)
    async with closed_peer(0, splits[0], memory(MemoryNetwork()), path, state_dir=state) as peer:
        assert peer.status()["access"]["version"] == 2
        assert peer.access is not None and peer.access.gate.reason(ident(2).peer_id, wall_ms()) == "revoked"


def test_configured_registries_may_connect_but_never_announce(tmp_path: Path) -> None:
    splits = peer_splits("digits", 1, partition_kind="iid", seed=11)
    path = write_roster(tmp_path / "roster.bin", roster_of([0]))
    registry = ident(9).peer_id
    peer = closed_peer(
        0, splits[0], memory(MemoryNetwork()), path, bootstrap=(f"/ip4/127.0.0.1/tcp/1/p2p/{registry}",)
    )
    assert peer._peer_allowed(registry)  # the transport lets the registry connect
    assert peer.engine.allowed is not None and not peer.engine.allowed(registry)  # its envelopes are refused
    assert not peer._peer_allowed(ident(8).peer_id)


def test_the_roster_refresh_interval_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"\[access\] roster_refresh_s: must be a number > 0"):
        PeerConfig(network_id="net", roster_refresh_s=0)
