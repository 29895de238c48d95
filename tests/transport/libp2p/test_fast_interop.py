"""A stock py-libp2p 0.8.1 peer (its own Noise and Yamux classes) and a p2pfl peer (batched Noise, fast yamux)
exchange multi-megabyte payloads both ways over real TCP on 127.0.0.1: the fast path is the same protocol."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p import new_host
from libp2p.abc import INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from multiaddr import Multiaddr

from p2pfl.transport.libp2p import Libp2pConfig, Libp2pTransport
from p2pfl.transport.libp2p.compat_noise import BatchedNoiseSession
from p2pfl.transport.libp2p.compat_yamux import FastYamux

pytestmark = pytest.mark.slow

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
PROTO = "/p2pfl-test/interop/1"
PAYLOAD = os.urandom(3 * 1024 * 1024 + 777)  # > the 256 KiB initial window, several write batches


@asynccontextmanager
async def stock_host() -> AsyncIterator[Any]:
    key_pair = create_new_key_pair(os.urandom(32))
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_ID: NoiseTransport(key_pair, noise_privkey=x25519_pair().private_key)},
        muxer_opt={TProtocol(YAMUX_ID): Yamux},
        listen_addrs=[Multiaddr(LOOPBACK)],
        enable_mDNS=False,
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )
    async with host.run([Multiaddr(LOOPBACK)]):
        try:
            yield host
        finally:
            with trio.move_on_after(5, shield=True):
                await host.close()


async def _read_exactly(stream: INetStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(8, "big") + body


def _layers(t: Libp2pTransport, peer: str) -> tuple[type, type]:
    conn = t.host.get_network().get_connections(ID.from_base58(peer))[0]
    muxed = conn.muxed_conn
    return type(muxed), type(muxed.secured_conn)  # type: ignore[attr-defined]


@pytest.mark.parametrize("ours_dials", [True, False])
async def test_a_stock_peer_and_ours_exchange_megabytes_both_ways(ours_dials: bool) -> None:
    async with (
        stock_host() as stock,
        Libp2pTransport.open(seed=os.urandom(32), network_id="interop", listen=LOOPBACK) as ours,
    ):

        async def handler(peer: str, request: bytes) -> bytes:
            return PAYLOAD if request == b"give" else request[::-1]

        ours.set_request_handler(PROTO, handler)

        async def stock_serves(stream: INetStream) -> None:
            size = int.from_bytes(await _read_exactly(stream, 8), "big")
            request = await _read_exactly(stream, size)
            await stream.write(_frame(b"\x00" + (PAYLOAD if request == b"give" else request)))
            await stream.close()

        stock.set_stream_handler(TProtocol(PROTO), stock_serves)
        stock_addr = f"{stock.get_addrs()[0]}"
        with trio.fail_after(60):
            if ours_dials:
                stock_id = await ours.connect(stock_addr)
            else:
                await stock.connect(info_from_p2p_addr(Multiaddr(ours.listen_addrs[0])))
                stock_id = str(stock.get_id())
                while not ours.host.get_network().get_connections(stock.get_id()):
                    await trio.sleep(0.01)
            assert _layers(ours, stock_id) == (FastYamux, BatchedNoiseSession)
            stock_conn = stock.get_network().get_connections(ID.from_base58(ours.peer_id))[0]
            assert type(stock_conn.muxed_conn) is Yamux
            assert type(stock_conn.muxed_conn.secured_conn) is SecureSession

            # ours fetches from the stock peer (stock writes, ours reads and grants window)
            got = await ours.request(stock_id, PROTO, b"give", max_response=8 << 20, timeout=30)
            assert got == PAYLOAD
            # the stock peer fetches from ours (ours writes into stock's window updates, stock reads)
            stream = await stock.new_stream(ID.from_base58(ours.peer_id), [TProtocol(PROTO)])
            await stream.write(_frame(b"give"))
            size = int.from_bytes(await _read_exactly(stream, 8), "big")
            body = await _read_exactly(stream, size)
            assert body[:1] == b"\x00" and body[1:] == PAYLOAD
            # and small ones still flow on the same connection afterwards
            assert await ours.request(stock_id, PROTO, b"abc", max_response=10, timeout=10) == b"abc"


@pytest.mark.parametrize("fast", [True, False])
async def test_parallel_multi_megabyte_streams_between_two_of_ours_keep_their_bytes(fast: bool) -> None:
    """Several streams share one connection's writer and windows; each response arrives whole and in order
    (also with ``fast_streams`` off: py-libp2p's own classes under p2pfl's framing)."""
    cfg = Libp2pConfig(max_inbound_streams_per_peer=8, fast_streams=fast)
    async with (
        Libp2pTransport.open(seed=os.urandom(32), network_id="i", listen=LOOPBACK, config=cfg) as a,
        Libp2pTransport.open(seed=os.urandom(32), network_id="i", listen=LOOPBACK, config=cfg) as b,
    ):
        bodies = {i: os.urandom(1024 * 1024 + i * 65_537) for i in range(6)}

        async def handler(peer: str, request: bytes) -> bytes:
            return bodies[request[0]]

        b.set_request_handler(PROTO, handler)
        a.set_request_handler(PROTO, handler)
        await a.connect(b.listen_addrs[0])
        got: dict[tuple[str, int], bytes] = {}

        async def fetch(src: Libp2pTransport, dst: Libp2pTransport, i: int) -> None:
            got[(src.peer_id, i)] = await src.request(
                dst.peer_id, PROTO, bytes([i]), max_response=8 << 20, timeout=60
            )

        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                for i in bodies:
                    nursery.start_soon(fetch, a, b, i)
                    nursery.start_soon(fetch, b, a, i)
        assert all(got[(p, i)] == bodies[i] for p in (a.peer_id, b.peer_id) for i in bodies)
