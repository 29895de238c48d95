"""The registry's rules, sans I/O: ownership, seq, ttl and expiry, caps, rate limit, pagination, errors."""

from __future__ import annotations

import os
from typing import Any

import msgpack
import pytest

from p2pfl.bootstrap.service import Registry, RegistryConfig
from p2pfl.discovery import PeerRecord, decode_message, encode_message
from p2pfl.identity import Identity

IDS = [Identity(bytes([i]) * 32) for i in range(1, 40)]
FAST = RegistryConfig(min_ttl=1.0, rate_per_second=1000.0, burst=1000.0)


def rec(ident: Identity, net: str = "A", *, seq: int = 1000, ttl: int = 60) -> PeerRecord:
    return PeerRecord.create(ident, net, ["/ip4/127.0.0.1/tcp/4001"], seq=seq, ttl=ttl)


def call(
    reg: Registry, who: Identity | str, fields: dict[str, Any] | bytes, now: float = 0.0
) -> dict[str, Any]:
    data = fields if isinstance(fields, bytes) else encode_message(fields)
    pid = who if isinstance(who, str) else who.peer_id
    return decode_message(reg.handle(pid, data, now))


def register(reg: Registry, ident: Identity, now: float = 0.0, **kw: Any) -> dict[str, Any]:
    return call(reg, ident, {"op": "register", "record": rec(ident, **kw).encoded}, now)


def discover(reg: Registry, net: str, now: float = 0.0, limit: int = 100, cursor: str | None = None) -> Any:
    fields: dict[str, Any] = {"op": "discover", "net": net, "limit": limit}
    if cursor is not None:
        fields["cursor"] = cursor
    return call(reg, IDS[-1], fields, now)


def test_register_then_discover_returns_records_verbatim() -> None:
    reg = Registry(FAST)
    assert register(reg, IDS[0]) == {"ok": True, "ttl": 60.0}
    resp = discover(reg, "A")
    assert resp["ok"] and resp["next"] is None
    assert resp["records"] == [rec(IDS[0]).encoded]
    assert discover(reg, "B")["records"] == []


def test_a_peer_can_only_register_itself() -> None:
    reg = Registry(FAST)
    resp = call(reg, IDS[1], {"op": "register", "record": rec(IDS[0]).encoded})
    assert resp["ok"] is False and resp["error"] == "peer_mismatch"
    assert reg.total == 0


def test_forged_record_is_refused() -> None:
    reg = Registry(FAST)
    outer = msgpack.unpackb(rec(IDS[0]).encoded)
    outer[2] = bytes(64)
    resp = call(reg, IDS[0], {"op": "register", "record": msgpack.packb(outer)})
    assert resp["error"] == "bad_signature"


def test_older_seq_is_refused_newer_replaces_and_identical_refreshes() -> None:
    reg = Registry(FAST)
    register(reg, IDS[0], seq=2000, ttl=10)
    assert register(reg, IDS[0], seq=1999)["error"] == "stale_seq"
    assert register(reg, IDS[0], seq=2000, ttl=11)["error"] == "stale_seq"  # same seq, other content
    assert register(reg, IDS[0], now=5.0, seq=2000, ttl=10)["ok"]  # a retry of the same record
    assert reg.sweep(14.0) == []
    assert register(reg, IDS[0], now=6.0, seq=2001, ttl=30)["ok"]
    assert reg.total == 1
    assert discover(reg, "A", now=7.0)["records"] == [rec(IDS[0], seq=2001, ttl=30).encoded]


def test_ttl_is_clamped_and_expired_peers_disappear() -> None:
    reg = Registry(RegistryConfig(min_ttl=5.0, max_ttl=20.0, rate_per_second=1e3, burst=1e3))
    assert register(reg, IDS[0], ttl=1)["ttl"] == 5.0
    assert register(reg, IDS[1], ttl=3600)["ttl"] == 20.0
    assert len(discover(reg, "A", now=4.9)["records"]) == 2
    assert len(discover(reg, "A", now=5.0)["records"]) == 1  # expired, even before the sweep
    assert reg.sweep(5.0) == [("A", IDS[0].peer_id)]
    assert reg.sweep(21.0) == [("A", IDS[1].peer_id)]
    assert reg.total == 0 and reg.status(21.0)["networks"] == 0


def test_unregister_removes_only_the_requester() -> None:
    reg = Registry(FAST)
    register(reg, IDS[0])
    register(reg, IDS[1])
    assert call(reg, IDS[0], {"op": "unregister", "net": "A"}) == {"ok": True, "removed": True}
    assert call(reg, IDS[0], {"op": "unregister", "net": "A"}) == {"ok": True, "removed": False}
    assert reg.total == 1


def test_networks_are_isolated() -> None:
    reg = Registry(FAST)
    for i in range(3):
        register(reg, IDS[i], net="A")
    for i in range(3, 5):
        register(reg, IDS[i], net="B")
    a = {PeerRecord.decode(r).peer_id for r in discover(reg, "A")["records"]}
    b = {PeerRecord.decode(r).peer_id for r in discover(reg, "B")["records"]}
    assert a == {i.peer_id for i in IDS[:3]} and b == {i.peer_id for i in IDS[3:5]}


def test_pagination_visits_every_peer_once_while_peers_come_and_go() -> None:
    reg = Registry(FAST)
    for ident in IDS[:25]:
        register(reg, ident)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = discover(reg, "A", limit=7, cursor=cursor)
        pages += 1
        seen += [PeerRecord.decode(r).peer_id for r in page["records"]]
        if pages == 2:  # churn mid-listing: a new peer and a departed one
            register(reg, IDS[30])
            call(reg, IDS[24], {"op": "unregister", "net": "A"})
        cursor = page["next"]
        if cursor is None:
            break
        assert pages < 10
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)
    assert {i.peer_id for i in IDS[:24]} <= set(seen)


def test_caps_per_peer_network_and_total() -> None:
    cfg = RegistryConfig(
        max_networks=3, max_per_network=2, max_total=5, max_per_peer=2, rate_per_second=1e3, burst=1e3
    )
    reg = Registry(cfg)
    assert register(reg, IDS[0], net="A")["ok"]
    assert register(reg, IDS[0], net="B")["ok"]
    assert register(reg, IDS[0], net="C")["error"] == "peer_limit"
    assert register(reg, IDS[1], net="A")["ok"]
    assert register(reg, IDS[2], net="A")["error"] == "network_full"
    assert register(reg, IDS[2], net="C")["ok"]
    assert register(reg, IDS[3], net="D")["error"] == "network_limit"
    assert register(reg, IDS[3], net="B")["ok"]
    assert reg.total == 5
    assert register(reg, IDS[4], net="C")["error"] == "registry_full"
    assert register(reg, IDS[0], net="A", seq=5000)["ok"]  # renewals always fit


def test_rate_limit_per_peer() -> None:
    reg = Registry(RegistryConfig(rate_per_second=2.0, burst=3.0))
    status = {"op": "status"}
    assert [call(reg, IDS[0], status, 0.0)["ok"] for _ in range(4)] == [True, True, True, False]
    limited = call(reg, IDS[0], status, 0.0)
    assert limited["error"] == "rate_limited" and 0 < limited["retry_after"] <= 0.5
    assert call(reg, IDS[1], status, 0.0)["ok"]  # others unaffected
    assert call(reg, IDS[0], status, 0.5)["ok"]  # refilled


def test_rate_buckets_are_bounded() -> None:
    reg = Registry(RegistryConfig(max_rate_entries=10))
    for i in range(100):
        call(reg, f"peer{i}", {"op": "status"})
    assert len(reg._buckets) == 10


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"", "malformed"),
        (b"\xc1", "malformed"),
        (msgpack.packb([1, 2]), "schema"),
        (msgpack.packb({"op": "fly"}), "unknown_op"),
        (msgpack.packb({"op": 7}), "unknown_op"),
        (msgpack.packb({"op": "status", "x": 1}), "schema"),
        (msgpack.packb({"op": "register"}), "schema"),
        (msgpack.packb({"op": "register", "record": "text"}), "schema"),
        (msgpack.packb({"op": "register", "record": b"\x00" * 10}), "malformed"),
        (msgpack.packb({"op": "discover", "net": "A", "limit": 0}), "schema"),
        (msgpack.packb({"op": "discover", "net": "A", "limit": 101}), "schema"),
        (msgpack.packb({"op": "discover", "net": "A", "limit": True}), "schema"),
        (msgpack.packb({"op": "discover", "net": "A/B", "limit": 5}), "schema"),
        (msgpack.packb({"op": "discover", "net": "A", "limit": 5, "cursor": 3}), "schema"),
        (msgpack.packb({"op": "unregister", "net": None}), "schema"),
        (msgpack.packb({1: 2}), "malformed"),
        (b"\xd4\x01\x00", "malformed"),
        (b"\x81\xa2op" + b"\xc6\xff\xff\xff\xff", "malformed"),
        (os.urandom(20_000), "oversize"),
    ],
)
def test_malformed_requests_get_error_responses(request_bytes: bytes, reason: str) -> None:
    reg = Registry(FAST)
    resp = call(reg, IDS[0], request_bytes)
    assert resp["ok"] is False and resp["error"] == reason, resp
    assert call(reg, IDS[0], {"op": "status"})["ok"]


def test_random_garbage_never_raises() -> None:
    import random

    rng = random.Random(3)
    reg = Registry(FAST)
    valid = encode_message({"op": "register", "record": rec(IDS[0]).encoded})
    for _ in range(3000):
        buf = bytearray(valid)
        for _ in range(rng.randint(1, 5)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        resp = decode_message(reg.handle(IDS[0].peer_id, bytes(buf), 0.0))
        assert isinstance(resp["ok"], bool)
    assert reg.counters.get("error_internal", 0) == 0


def test_status_counts() -> None:
    reg = Registry(FAST)
    register(reg, IDS[0])
    register(reg, IDS[0], net="B")
    st = call(reg, IDS[1], {"op": "status"})["status"]
    assert (st["networks"], st["registrations"], st["peers"]) == (2, 2, 1)
    assert st["counters"]["ok_register"] == 2
