"""The swarm and its connections: what the transport changes or reads below pubsub (a compat module: it
touches py-libp2p internals).

Split out of :mod:`.compat`, which re-exports every name here and must be imported first: it checks the
installed py-libp2p, including the instance attributes read here (:data:`.compat.REQUIRED_INSTANCE_ATTRS`),
before these are used. These work on the network and its connection layers (dialling, direction, the TCP
socket, byte counts), not on gossip.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Literal

import trio
from libp2p.abc import IMuxedConn, INetConn, INetwork
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.rcmgr import Direction

from p2pfl.transport.base import TransportStats
from p2pfl.transport.inbound import InboundGate

__all__ = [
    "connection_direction",
    "count_wire_bytes",
    "disable_auto_connector",
    "evict_negative_dial_cache",
    "gate_inbound_connections",
    "tcp_socket_of",
]


async def _noop() -> None:
    return None


def disable_auto_connector(network: INetwork) -> None:
    """The swarm's auto-connector dials peerstore entries every 30 s toward (low + high watermark) / 2 = 150
    connections, densifying the topology the application chose; it never starts if ``start`` does nothing."""
    auto = getattr(network, "auto_connector", None)
    if auto is not None:
        auto.start = _noop


def evict_negative_dial_cache(network: INetwork, peer_id: str) -> None:
    """A failed dial puts the peer in the swarm's negative cache, which refuses dials to it for 60 s; an
    explicit connect clears it so that dialling a peer that came back works at once."""
    negative = getattr(network, "_negative_peer_cache", None)
    if negative is not None:
        negative.evict(peer_id)


async def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):  # a connection we refuse may already be gone
        await conn.close()


def gate_inbound_connections(network: INetwork, gate: InboundGate, drop: Callable[[str], None]) -> None:
    """Replace the swarm's inbound connection handler with one that holds an inbound slot only while its
    connection lives, and asks ``gate`` before each handshake (refusals counted with ``drop(reason)``).

    py-libp2p 0.8.1's handler takes one of ``max_connections`` inbound slots per accepted connection and,
    after the upgrade, waits for the *swarm* to finish before it gives the slot back: every inbound
    connection ever accepted keeps its slot after it closed, and once ``max_connections`` peers have
    connected over the host's life it refuses every new inbound connection (measured: a host with
    ``max_connections = 10`` refused the 11th of 11 connect-and-leave cycles, its slots all still taken).
    A peer that runs for weeks, or anyone who connects and leaves in a loop, closed its door for good.
    This handler waits for the connection itself to close (the muxer's ``event_closed``), the swarm's end
    only as a fallback. The rest is the library's TCP path: the connection gate, then the upgrade.
    Left: a yamux ``close`` cancelled before it reaches the socket (its caller's deadline expires while it
    waits for the streams lock) never sets ``event_closed``, and the connection keeps its slot until its
    socket ends (found in review, not seen in runs)."""
    swarm: Any = network
    limiter: trio.CapacityLimiter = swarm._inbound_limiter

    library = type(swarm)._handle_inbound_connection

    async def handle(read_write_closer: Any, maddr: Any) -> None:
        if isinstance(read_write_closer, IMuxedConn):  # QUIC and the like: no handshake of ours to gate
            await library(swarm, read_write_closer, maddr)
            return
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            drop("inbound_slots")
            await _close_quietly(read_write_closer)
            return
        try:
            host = remote_host(read_write_closer)
            refused = gate.admit(host, trio.current_time())
            if refused is not None:
                drop(refused)
                await _close_quietly(read_write_closer)
                return
            try:
                remote_maddr = swarm._build_remote_multiaddr(read_write_closer)
                if remote_maddr is not None and not await swarm.connection_gate.is_allowed(remote_maddr):
                    drop("connection_gate")
                    await _close_quietly(read_write_closer)
                    return
                raw_conn = RawConnection(read_write_closer, False)
                muxed = await swarm.upgrade_inbound_raw_conn(raw_conn, maddr)
            except Exception:  # a failed handshake ends this connection only
                drop("inbound_handshake_failed")
                await _close_quietly(read_write_closer)
                return
            finally:
                gate.done(host)
            closed = getattr(muxed, "event_closed", None)
            if isinstance(closed, trio.Event):
                await closed.wait()
            else:
                await swarm.manager.wait_finished()
        finally:
            limiter.release()

    swarm._handle_inbound_connection = handle


def remote_host(stream: object) -> str:
    """The remote IP address of an inbound raw connection, "" when unknown. Read from the socket:
    py-libp2p's ``get_remote_address`` answers None for IPv6 (its ``getpeername`` has four fields)."""
    sock = tcp_socket_of(stream)
    if sock is not None:
        with contextlib.suppress(OSError):
            peer = sock.getpeername()
            if isinstance(peer, tuple) and peer:
                return str(peer[0])
    address = getattr(stream, "get_remote_address", None)
    remote = address() if address is not None else None
    return str(remote[0]) if remote else ""


def connection_direction(conn: INetConn) -> Literal["inbound", "outbound", "unknown"]:
    """Who dialled: the resync lets the dialler (who knows a dialable address) redial."""
    direction = getattr(conn, "direction", Direction.UNKNOWN)
    if direction == Direction.INBOUND:
        return "inbound"
    if direction == Direction.OUTBOUND:
        return "outbound"
    return "unknown"


def tcp_socket_of(conn: object) -> trio.socket.SocketType | None:
    """The TCP socket under a py-libp2p connection, so ``abort`` can close it.

    py-libp2p can deadlock a yamux connection (both ends' send buffers full, each reader waiting for the
    write lock a blocked ``send_all`` holds) and a shielded stream reset then waits forever; closing the
    socket is the one thing that wakes it. The layers (swarm conn, yamux, secure session, noise
    reader-writer, raw connection, trio stream) differ between versions, so follow the attributes they use
    for "the layer below", a few levels deep, until a trio ``SocketStream``.
    """
    node: object = conn
    for _ in range(10):
        if isinstance(node, trio.SocketStream):
            return node.socket
        below = None
        for attr in ("muxed_conn", "secured_conn", "conn", "stream", "read_writer"):
            below = getattr(node, attr, None)
            if below is not None:
                break
        if below is None:
            return None
        node = below
    return None


# ----------------------------------------------------------------------------------------- wire bytes
class _CountingStream:
    """A raw connection's byte stream that adds what it reads and writes to ``stats.wire_*``. It keeps the
    stream below as ``stream``, so :func:`tcp_socket_of` still finds the socket."""

    def __init__(self, stream: object, stats: TransportStats) -> None:
        self.stream = stream
        self._stats = stats

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)  # type: ignore[attr-defined]
        self._stats.wire_sent += len(data)

    async def read(self, n: int | None = None) -> bytes:
        data: bytes = await self.stream.read(n)  # type: ignore[attr-defined]
        self._stats.wire_received += len(data)
        return data

    async def close(self) -> None:
        await self.stream.close()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:  # get_remote_address and whatever else a version adds
        return getattr(self.stream, name)


def count_wire_bytes(network: INetwork, stats: TransportStats) -> None:
    """Count every byte of every connection of ``network`` (handshakes, yamux and gossipsub control, relayed
    messages) in ``stats.wire_sent``/``wire_received``: the swarm hands each new raw connection, inbound or
    outbound, to ``upgrader.upgrade_security`` first, where its byte stream is wrapped. Per network (the
    upgrader is the swarm's own), so several hosts in one process count apart."""
    upgrader = network.upgrader  # type: ignore[attr-defined]
    inner = upgrader.upgrade_security

    async def upgrade_security(raw_conn: object, *args: object, **kwargs: object) -> object:
        stream = getattr(raw_conn, "stream", None)
        if stream is not None and not isinstance(stream, _CountingStream):
            raw_conn.stream = _CountingStream(stream, stats)  # type: ignore[attr-defined]
        return await inner(raw_conn, *args, **kwargs)

    upgrader.upgrade_security = upgrade_security
