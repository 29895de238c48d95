"""Abuse: a registry flooded with registrations, Sybils and garbage keeps its bounds and its service."""

from __future__ import annotations

import os
import random
import socket
import tracemalloc
from collections import Counter
from pathlib import Path

import msgpack
import pytest
import trio

from p2pfl.bootstrap.service import Registry, RegistryConfig
from p2pfl.discovery import (
    MAX_RECORD_BYTES,
    PROTOCOL_ID,
    BootstrapClient,
    PeerRecord,
    RegistryError,
    decode_message,
    encode_message,
)
from p2pfl.errors import TransportError
from p2pfl.identity import Identity
from p2pfl.transport import Libp2pConfig, Libp2pTransport

from .conftest import start_registry

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def fat_addrs(peer: str) -> list[str]:
    """Eight long DNS addresses: close to the largest record a peer may sign."""
    return [
        f"/dns4/{'a' * 60}.{'b' * 60}.{'c' * 50}.n{i}.example/tcp/{4000 + i}/p2p/{peer}" for i in range(8)
    ]


def test_registry_memory_per_record_is_bounded() -> None:
    """The state of a full registry of maximal records stays within the documented per-record bound."""
    n = 1000
    ids = [Identity(i.to_bytes(4, "big") * 8) for i in range(1, n + 1)]
    records = [PeerRecord.create(x, f"net{k % 50}", fat_addrs(x.peer_id)).encoded for k, x in enumerate(ids)]
    assert max(len(r) for r in records) <= MAX_RECORD_BYTES
    reg = Registry(RegistryConfig(max_total=n, rate_per_second=1e6, burst=1e6))
    requests = [encode_message({"op": "register", "record": r}) for r in records]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for x, req in zip(ids, requests, strict=True):
        assert decode_message(reg.handle(x.peer_id, req, 0.0))["ok"]
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_record = used / n
    record_size = sum(map(len, records)) / n
    assert reg.total == n
    print(f"\nregistry state: {per_record:.0f} B per record of {record_size:.0f} B")
    # the record is kept verbatim; the bookkeeping around it stays under 1 KiB per record
    assert per_record < record_size + 1024, (per_record, record_size)


async def _sybil(i: int, addr: str, errors: Counter[str]) -> None:
    ident = Identity(bytes([i]) * 32)
    async with Libp2pTransport.open(seed=ident.seed, network_id="flood", listen=LOOPBACK) as t:
        client = BootstrapClient(t, ident, "flood0", [addr], ttl=3600, advertise=fat_addrs(ident.peer_id))
        for j in range(6):
            client.network_id = "flood0" if j == 0 else f"flood{1 + (i * 5 + j) % 14}"
            try:
                await client._call(addr, {"op": "register", "record": client.make_record().encoded})
                errors["ok"] += 1
            except RegistryError as exc:
                errors[exc.reason] += 1


def _garbage(rng: random.Random, own: BootstrapClient) -> bytes:
    kind = rng.randrange(7)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 16_000))
    if kind == 1:
        return b"\xdd\xff\xff\xff\xff" + rng.randbytes(100)  # array header claiming 4 G entries
    if kind == 2:
        return encode_message({"op": "discover", "net": "honest", "limit": rng.randrange(-5, 10**9)})
    if kind == 3:
        return encode_message({"op": "register", "record": rng.randbytes(rng.randrange(1, 4000))})
    if kind == 4:
        return bytes(
            msgpack.packb({"op": "register", "record": own.make_record().encoded, "extra": [1] * 100})
        )
    if kind == 5:
        return encode_message({"op": "register", "record": own.make_record().encoded})  # valid spam
    return rng.randbytes(70_000)  # over the registry's request cap: the transport resets the stream


@pytest.mark.slow
async def test_flood_keeps_memory_bounded_and_honest_peers_served(tmp_path: Path) -> None:
    reg = start_registry(
        tmp_path,
        "--max-networks", "10", "--max-per-network", "20", "--max-total", "150", "--max-per-peer", "4",
        "--rate", "20", "--burst", "40",
    )  # fmt: skip
    try:
        addr = reg.addr
        honest = Identity(b"\x01" * 32)
        async with Libp2pTransport.open(seed=honest.seed, network_id="honest", listen=LOOPBACK) as ht:
            h = BootstrapClient(ht, honest, "honest", [addr])
            with trio.fail_after(10):
                assert await h.register() == 1
                await h.status(addr)
            rss0 = reg.rss_kib()

            # 1. Sybils: 30 identities, each trying 6 networks (one shared network for all).
            errors: Counter[str] = Counter()
            with trio.fail_after(60):
                for i in range(100, 130):
                    await _sybil(i, addr, errors)
            assert errors["peer_limit"] > 0 and errors["network_full"] > 0 and errors["network_limit"] > 0

            # 2. One connection sending 1500 garbage / spam requests, 4 at a time.
            rng = random.Random(11)
            attacker = Identity(b"\x02" * 32)
            outcomes: Counter[str] = Counter()
            async with Libp2pTransport.open(
                seed=attacker.seed,
                network_id="x",
                listen=LOOPBACK,
                config=Libp2pConfig(max_request_bytes=1 << 17),
            ) as at:
                a = BootstrapClient(at, attacker, "spam", [addr])
                pid = await at.connect(addr)
                payloads = [_garbage(rng, a) for _ in range(1500)]

                async def worker(k: int) -> None:
                    for p in payloads[k::4]:
                        try:
                            resp = decode_message(
                                await at.request(pid, PROTOCOL_ID, p, max_response=1 << 20, timeout=5)
                            )
                            outcomes["ok" if resp["ok"] else str(resp["error"])] += 1
                        except TransportError:
                            outcomes["transport_error"] += 1

                with trio.fail_after(90):
                    async with trio.open_nursery() as nursery:
                        for k in range(4):
                            nursery.start_soon(worker, k)

            # 3. Raw TCP garbage at the listener.
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", reg.port), timeout=2) as s:
                    s.sendall(os.urandom(64 * 1024))

            rss1 = reg.rss_kib()
            with trio.fail_after(20):
                assert await h.register() == 1  # renewal of the honest peer
                st = (await h.status(addr))["status"]
                async with Libp2pTransport.open(
                    seed=b"\x03" * 32, network_id="honest", listen=LOOPBACK
                ) as t2:
                    h2 = BootstrapClient(t2, Identity(b"\x03" * 32), "honest", [addr])
                    assert await h2.register() == 1
                    assert [r.peer_id for r in await h2.discover()] == [honest.peer_id]
        print(f"\nflood: rss {rss0} -> {rss1} KiB; sybil {dict(errors)}; garbage {dict(outcomes)}")
        print(f"status: {st['registrations']} registrations, {st['networks']} networks")
        assert outcomes["rate_limited"] > 500
        assert outcomes["transport_error"] > 0
        assert st["registrations"] <= 150 and st["networks"] <= 10
        assert st["counters"].get("error_internal", 0) == 0
        assert rss1 - rss0 < 40 * 1024, (rss0, rss1)
        assert rss1 < 300 * 1024
        assert reg.proc.poll() is None
    finally:
        assert reg.stop() == 0
    log = (tmp_path / "registry.log").read_text()
    assert "Traceback" not in log, log[-3000:]
