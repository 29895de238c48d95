"""A closed network of real libp2p peers on 127.0.0.1: refusal at connection, revocation, expiry."""

from __future__ import annotations

from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pfl.errors import TransportError
from p2pfl.peer import Peer
from p2pfl.sim.data import peer_splits
from tests.roster.peers import closed_peer, roster_of, wall_ms, write_roster
from tests.test_peer import run_all

pytestmark = pytest.mark.slow


async def wait_for(cond: Any, seconds: float = 20.0) -> None:
    with trio.fail_after(seconds):
        while not cond():
            await trio.sleep(0.05)


def connected(a: Peer, b: Peer) -> bool:
    return b.peer_id in a.transport.connected_peers()


async def test_a_closed_libp2p_network_refuses_outsiders_and_drops_the_revoked(tmp_path: Path) -> None:
    splits = peer_splits("digits", 4, partition_kind="iid", seed=11)
    files = [write_roster(tmp_path / f"roster{i}.bin", roster_of([0, 1, 2])) for i in range(3)]
    async with AsyncExitStack() as stack:
        a, b, c = [
            await stack.enter_async_context(closed_peer(i, splits[i], None, files[i], roster_refresh_s=0.5))
            for i in range(3)
        ]
        # the outsider runs an open peer (no roster) and keeps trying
        outsider = await stack.enter_async_context(closed_peer(3, splits[3], None, None, min_neighbours=0))
        await a.connect(b.listen_addrs[0])
        await b.connect(c.listen_addrs[0])
        await a.connect(c.listen_addrs[0])
        b.choose((a.peer_id,))  # the members agree on a complete graph (mix_scope = "chosen")
        c.choose((a.peer_id, b.peer_id))
        for target in (a, b, c):
            with suppress(TransportError):  # the connection is closed right after the Noise handshake
                await outsider.connect(target.listen_addrs[0])
        await wait_for(lambda: not outsider.transport.connected_peers())
        with trio.fail_after(90):
            await run_all([a, b, c, outsider], 2)
        for p in (a, b, c):
            assert outsider.peer_id not in p.engine.replicas
            assert p.status()["access"]["refused"].get("not_member", 0) >= 1
        assert {a.peer_id, c.peer_id} <= set(b.engine.replicas)
        assert outsider.transport.stats.requests_served == 0  # no member fetched a byte of its model
        assert outsider.transport.stats.bytes_received < 100_000  # nor received one of theirs

        # the operator revokes c; version 2 is placed at a only, b adopts it from a over /p2pfl/roster/1
        write_roster(files[0], roster_of([0, 1], version=2, revoked=(2,)))
        await wait_for(lambda: b.status()["access"]["version"] == 2)
        await wait_for(lambda: not connected(a, c) and not connected(b, c))
        assert b.status()["access"]["refused"]["revoked"] >= 1
        with suppress(TransportError):
            await c.connect(b.listen_addrs[0])
        await wait_for(lambda: not connected(b, c))

        # expiry: a's clock passes the roster's expiry, so a refuses even b, and says so in its status
        assert a.access is not None
        later = wall_ms() + 2 * 86_400_000
        a.access.now_ms = lambda: later
        await wait_for(lambda: not connected(a, b))
        assert a.status()["access"]["expired"] is True
        assert a.status()["access"]["refused"]["roster_expired"] >= 1
