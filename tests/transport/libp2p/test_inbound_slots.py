"""Inbound connections against real py-libp2p hosts on 127.0.0.1: slots come back when a connection ends,
and one source's dials and silent sockets are bounded (p2pfl.transport.inbound). Every wait is bounded."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio

from p2pfl.errors import TransportError
from p2pfl.transport import Libp2pConfig, Libp2pTransport

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def seed(i: int) -> bytes:
    return i.to_bytes(2, "big") * 16


async def connect_and_leave(addr: str, listener: Libp2pTransport, i: int) -> None:
    async with Libp2pTransport.open(seed=seed(100 + i), network_id="t", listen=LOOPBACK) as dialler:
        with trio.fail_after(10):
            await dialler.connect(addr)
        await dialler.disconnect(listener.peer_id)
        with trio.fail_after(10):
            while dialler.peer_id in listener.connected_peers():
                await trio.sleep(0.02)


async def test_a_host_keeps_accepting_after_more_peers_than_its_connection_cap_have_come_and_gone() -> None:
    """py-libp2p kept one inbound slot per connection it ever accepted: a host with a cap of 4 refused
    the 5th peer to connect though the 4 before had left (a long-lived peer, after ``max_connections``
    arrivals over its life, or anyone who connects and leaves in a loop, shut it for good)."""
    cfg = replace(Libp2pConfig(), max_connections=4)
    async with Libp2pTransport.open(seed=seed(1), network_id="t", listen=LOOPBACK, config=cfg) as host:
        addr = host.listen_addrs[0]
        for i in range(10):
            await connect_and_leave(addr, host, i)
        async with Libp2pTransport.open(seed=seed(2), network_id="t", listen=LOOPBACK) as fresh:
            with trio.fail_after(10):
                await fresh.connect(addr)
            assert host.peer_id in fresh.connected_peers()
        assert host.stats.dropped.get("inbound_slots", 0) == 0


async def test_one_source_past_its_burst_is_refused_before_the_handshake_and_others_still_connect() -> None:
    cfg = replace(Libp2pConfig(), inbound_rate=0.01, inbound_burst=3, inbound_limit_loopback=True)
    async with Libp2pTransport.open(seed=seed(1), network_id="t", listen=LOOPBACK, config=cfg) as host:
        addr = host.listen_addrs[0]
        for i in range(3):
            await connect_and_leave(addr, host, i)
        async with Libp2pTransport.open(seed=seed(50), network_id="t", listen=LOOPBACK) as late:
            with pytest.raises(TransportError), trio.fail_after(10):
                await late.connect(addr)
        assert host.stats.dropped["inbound_rate"] >= 1
    # the same dials to a host with the default limits: loopback is exempt, all connect
    async with Libp2pTransport.open(seed=seed(1), network_id="t", listen=LOOPBACK) as host:
        for i in range(5):
            await connect_and_leave(host.listen_addrs[0], host, i)
        assert host.stats.dropped.get("inbound_rate", 0) == 0


async def open_silent(host: str, port: int, n: int) -> list[trio.SocketStream]:
    return [await trio.open_tcp_stream(host, port) for _ in range(n)]


async def count_ended(streams: list[trio.SocketStream]) -> int:
    """How many of ``streams`` the other end closed (a read sees the end of the stream at once)."""
    ended = 0
    for stream in streams:
        with trio.move_on_after(0.2):
            try:
                if await stream.receive_some(1) == b"":
                    ended += 1
            except trio.BrokenResourceError:
                ended += 1
    return ended


def port_of(addr: str) -> int:
    return int(addr.split("/tcp/")[1].split("/", maxsplit=1)[0])


async def test_silent_sockets_from_one_source_hold_at_most_its_handshake_allowance() -> None:
    """Sockets that never speak hold a handshake until the upgrade times out (10 s); one source may hold
    only ``inbound_handshakes`` of them, and the host's slots stay free for everyone else."""
    cfg = replace(Libp2pConfig(), inbound_handshakes=2, inbound_limit_loopback=True)
    async with Libp2pTransport.open(seed=seed(1), network_id="t", listen=LOOPBACK, config=cfg) as host:
        silent: list[trio.SocketStream] = []
        try:
            with trio.fail_after(8):  # well inside the 10 s the two admitted handshakes are held
                silent = await open_silent("127.0.0.1", port_of(host.listen_addrs[0]), 6)
                while host.stats.dropped.get("inbound_handshakes", 0) < 4:
                    await trio.sleep(0.02)
                # while two silent sockets hold this source's allowance, its next dial is refused too
                async with Libp2pTransport.open(seed=seed(60), network_id="t", listen=LOOPBACK) as peer:
                    with pytest.raises(TransportError):
                        await peer.connect(host.listen_addrs[0])
                # the four refused were closed at once (the two held are read too: they stay open)
                assert await count_ended(silent) == 4
        finally:
            for stream in silent:
                await stream.aclose()
        # once they are gone (the handshake reads the end of the stream), the source may dial again
        async with Libp2pTransport.open(seed=seed(61), network_id="t", listen=LOOPBACK) as peer:
            with trio.fail_after(10):
                while True:
                    try:
                        await peer.connect(host.listen_addrs[0])
                        break
                    except TransportError:
                        await trio.sleep(0.1)
            assert host.peer_id in peer.connected_peers()


async def test_an_ipv6_source_is_read_from_its_socket() -> None:
    """py-libp2p's ``get_remote_address`` answers None for IPv6: read from it, every IPv6 source would
    share one bucket, and ``::1`` would not be exempt as loopback."""
    try:
        probe = trio.socket.socket(trio.socket.AF_INET6)
        await probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    six = "/ip6/::1/tcp/0"
    exempt = replace(Libp2pConfig(), inbound_handshakes=1)
    async with Libp2pTransport.open(seed=seed(1), network_id="t", listen=six, config=exempt) as host:
        silent: list[trio.SocketStream] = []
        try:
            with trio.fail_after(8):
                silent = await open_silent("::1", port_of(host.listen_addrs[0]), 3)
                await trio.sleep(0.3)
                assert host.stats.dropped.get("inbound_handshakes", 0) == 0  # loopback: exempt
        finally:
            for stream in silent:
                await stream.aclose()
    limited = replace(Libp2pConfig(), inbound_handshakes=1, inbound_limit_loopback=True)
    async with Libp2pTransport.open(seed=seed(2), network_id="t", listen=six, config=limited) as host:
        silent = []
        try:
            with trio.fail_after(8):
                silent = await open_silent("::1", port_of(host.listen_addrs[0]), 3)
                while host.stats.dropped.get("inbound_handshakes", 0) < 2:
                    await trio.sleep(0.02)
        finally:
            for stream in silent:
                await stream.aclose()


async def test_a_peer_config_s_inbound_limits_reach_its_transport() -> None:
    """``[peer] inbound_*`` (what ``p2pfl peer`` reads) are the limits its libp2p host enforces."""
    from p2pfl.config.schema import PeerConfig
    from p2pfl.identity import Identity
    from p2pfl.peer_wiring import libp2p_factory

    config = PeerConfig(network_id="t", inbound_rate=0.01, inbound_burst=2, inbound_handshakes=5)
    async with libp2p_factory(config)(Identity(seed(7))) as host:
        limits = host.config.inbound_limits()
        assert (limits.rate, limits.burst, limits.handshakes) == (0.01, 2.0, 5)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
async def test_the_remote_host_of_an_inbound_connection_is_read_for_both_families(address: str) -> None:
    from libp2p.io.trio import TrioTCPStream

    from p2pfl.transport.libp2p.compat_swarm import remote_host

    family = trio.socket.AF_INET6 if ":" in address else trio.socket.AF_INET
    try:
        listeners = await trio.open_tcp_listeners(0, host=address)
    except OSError:
        pytest.skip(f"no {address} here")
    port = listeners[0].socket.getsockname()[1]
    assert listeners[0].socket.family == family
    with trio.fail_after(5):
        client = await trio.open_tcp_stream(address, port)
        server = await listeners[0].accept()
    try:
        assert remote_host(TrioTCPStream(server)) == address
    finally:
        await client.aclose()
        await server.aclose()
        await listeners[0].aclose()
