"""PeerRecord and PeerCache: signing, strict decoding, address rules, persistence (pure, no network)."""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.discovery import (
    MAX_ADDRS,
    SIGNING_DOMAIN,
    NetworkMismatchError,
    NonCanonicalRecordError,
    PeerCache,
    PeerMismatchError,
    PeerRecord,
    RecordError,
    RecordSchemaError,
    RecordSignatureError,
    decode_message,
    normalize_addr,
)
from p2pfl.identity import Identity
from tests.strategies import loose_encodings

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(32, 64)))


def record(
    identity: Identity = ALICE, net: str = "A", seq: int = 1_700_000_000_000, **kw: object
) -> PeerRecord:
    return PeerRecord.create(identity, net, ["/ip4/127.0.0.1/tcp/4001"], seq=seq, **kw)  # type: ignore[arg-type]


def test_record_round_trips_and_binds_addresses_to_the_peer() -> None:
    rec = record(ttl=60)
    assert rec.addrs == (f"/ip4/127.0.0.1/tcp/4001/p2p/{ALICE.peer_id}",)
    back = PeerRecord.decode(rec.encoded, network_id="A", peer_id=ALICE.peer_id)
    assert back == rec
    assert back.encoded == rec.encoded
    assert back.expires_at == pytest.approx(1_700_000_000 + 60)


def test_tampered_record_fails_its_signature() -> None:
    rec = record()
    version, body, sig = msgpack.unpackb(rec.encoded)
    fields = msgpack.unpackb(body)
    fields["addrs"] = [f"/ip4/10.6.6.6/tcp/4001/p2p/{ALICE.peer_id}"]
    forged_body = msgpack.packb(dict(sorted(fields.items())))
    forged = msgpack.packb([version, forged_body, sig])
    with pytest.raises(RecordSignatureError):
        PeerRecord.decode(forged)
    flipped = bytearray(rec.encoded)
    flipped[-1] ^= 1
    with pytest.raises(RecordSignatureError):
        PeerRecord.decode(bytes(flipped))


def test_record_signed_by_someone_else_is_refused() -> None:
    rec = record()
    _, body, _ = msgpack.unpackb(rec.encoded)
    forged = msgpack.packb([1, body, BOB.sign(SIGNING_DOMAIN + body)])
    with pytest.raises(RecordSignatureError):
        PeerRecord.decode(forged)


def test_decode_can_require_the_network_and_the_peer() -> None:
    rec = record()
    with pytest.raises(PeerMismatchError):
        PeerRecord.decode(rec.encoded, peer_id=BOB.peer_id)
    with pytest.raises(NetworkMismatchError):
        PeerRecord.decode(rec.encoded, network_id="B")


def test_non_canonical_encodings_are_refused() -> None:
    rec = record()
    version, body, sig = msgpack.unpackb(rec.encoded)
    fields = msgpack.unpackb(body)
    reordered = msgpack.packb(dict(reversed(list(fields.items()))))
    with pytest.raises(NonCanonicalRecordError):
        PeerRecord.decode(msgpack.packb([version, reordered, sig]))
    # same values, wider integer encoding of the version
    wide = b"\x93\xcd\x00\x01" + rec.encoded[2:]
    with pytest.raises(NonCanonicalRecordError):
        PeerRecord.decode(wide)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x93\x01",
        msgpack.packb({"a": 1}),
        msgpack.packb([2, b"x", b"y" * 64]),
        msgpack.packb([1, b"\x80", b"y" * 64]),
        msgpack.packb([1, msgpack.packb([1, 2]), b"y" * 64]),
        msgpack.packb([1, b"x", b"short"]),
        b"\x93\x01" + b"\xc6\xff\xff\xff\xff",
        b"\xd4\x01\x00",
        msgpack.packb(list(range(10_000))),
        os.urandom(5000),
    ],
)
def test_garbage_raises_record_errors_only(data: bytes) -> None:
    with pytest.raises(RecordError):
        PeerRecord.decode(data)


def test_random_mutations_never_escape_as_other_errors() -> None:
    rng = random.Random(7)
    base = record().encoded
    for _ in range(2000):
        buf = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        with contextlib.suppress(RecordError):
            PeerRecord.decode(bytes(buf))


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.1/tcp/1/p2p/{me}"),
        ("/ip6/::1/tcp/4001/p2p/{me}", "/ip6/::1/tcp/4001/p2p/{me}"),
        ("/dns4/registry.example.org/tcp/443", "/dns4/registry.example.org/tcp/443/p2p/{me}"),
        ("memory/{me}", "memory/{me}"),
    ],
)
def test_normalize_addr_accepts_dialable_addresses(addr: str, expected: str) -> None:
    me = ALICE.peer_id
    assert normalize_addr(addr.format(me=me), me) == expected.format(me=me)


@pytest.mark.parametrize(
    "addr",
    [
        "/ip4/0.0.0.0/tcp/4001",
        "/ip6/::/tcp/4001",
        "/ip4/010.0.0.1/tcp/4001",
        "/ip4/1.2.3.4/tcp/0",
        "/ip4/1.2.3.4/tcp/65536",
        "/ip4/1.2.3.4/udp/4001",
        "/ip4/1.2.3.4/tcp/4001/ws",
        "/ip6/127.0.0.1/tcp/1",
        "/unix/tmp/sock",
        "/dns/bad_name!/tcp/1",
        "ip4/1.2.3.4/tcp/1",
        "/ip4/1.2.3.4/tcp/4001/p2p/" + "x" * 300,
    ],
)
def test_normalize_addr_refuses_the_rest(addr: str) -> None:
    with pytest.raises(RecordError):
        normalize_addr(addr, ALICE.peer_id)


def test_address_of_another_peer_is_refused() -> None:
    with pytest.raises(PeerMismatchError):
        PeerRecord.create(ALICE, "A", [f"/ip4/1.2.3.4/tcp/1/p2p/{BOB.peer_id}"])


def test_record_bounds() -> None:
    too_many = [f"/ip4/10.0.0.{i}/tcp/1" for i in range(MAX_ADDRS + 1)]
    with pytest.raises(RecordSchemaError):
        PeerRecord.create(ALICE, "A", too_many)
    with pytest.raises(RecordSchemaError):
        PeerRecord.create(ALICE, "A", [])
    with pytest.raises(RecordSchemaError):
        PeerRecord.create(ALICE, "bad/net", ["/ip4/1.2.3.4/tcp/1"])
    with pytest.raises(RecordSchemaError):
        PeerRecord.create(ALICE, "A", ["/ip4/1.2.3.4/tcp/1"], ttl=0)


# ---------------------------------------------------------------------------------------------- cache


def test_cache_persists_and_reloads_verified_records(tmp_path: Path) -> None:
    cache = PeerCache.in_state_dir(tmp_path / "state", network_id="A", own_peer_id=ALICE.peer_id)
    assert not cache.add(record(ALICE))  # never ourselves
    assert not cache.add(record(BOB, net="B"))  # never another network
    assert cache.add(record(BOB), seen=10.0)
    cache.save()
    assert oct((tmp_path / "state" / PeerCache.FILENAME).stat().st_mode & 0o777) == "0o600"
    again = PeerCache.in_state_dir(tmp_path / "state", network_id="A", own_peer_id=ALICE.peer_id)
    assert again.records() == [record(BOB)]
    assert not list((tmp_path / "state").glob("*.tmp"))


def test_cache_keeps_newest_seq_and_is_bounded(tmp_path: Path) -> None:
    cache = PeerCache(tmp_path / "c.json", network_id="A", max_entries=5)
    ids = [Identity(bytes([i]) * 32) for i in range(1, 9)]
    for i, ident in enumerate(ids):
        cache.add(record(ident, seq=1000 + i), seen=float(i))
    assert len(cache) == 5
    assert [r.peer_id for r in cache.records()] == [i.peer_id for i in reversed(ids[3:])]
    newest = ids[7]
    assert not cache.add(record(newest, seq=999), seen=100.0)  # older seq never replaces a newer one
    assert cache.add(record(newest, seq=5000), seen=100.0)
    assert cache.records()[0].seq == 5000


def test_cache_drops_tampered_entries_and_survives_corrupt_files(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    cache = PeerCache(path, network_id="A")
    cache.add(record(BOB), seen=1.0)
    cache.add(record(Identity(bytes([9]) * 32)), seen=2.0)
    cache.save()
    doc = json.loads(path.read_text())
    doc["records"][0]["record"] = doc["records"][1]["record"][:-8] + "AAAAAAA="
    doc["records"].append({"record": "!!!", "last_seen": 1})
    doc["records"].append("nonsense")
    path.write_text(json.dumps(doc))
    reloaded = PeerCache(path, network_id="A")
    assert [r.peer_id for r in reloaded.records()] == [BOB.peer_id]
    assert reloaded.rejected == 3
    for junk in (b"\xff\xfe", b"{", b"[]", json.dumps({"format": "other"}).encode()):
        path.write_bytes(junk)
        assert len(PeerCache(path, network_id="A")) == 0


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 2**64 - 1), st.integers(1, 7 * 24 * 3600), st.data())
def test_a_record_is_accepted_exactly_in_its_canonical_encoding(
    seq: int, ttl: int, data: st.DataObject
) -> None:
    rec = record(seq=seq, ttl=ttl)
    _, body, _ = msgpack.unpackb(rec.encoded)
    loose_body, body_widened = data.draw(loose_encodings(msgpack.unpackb(body)))
    signed = [1, loose_body, ALICE.sign(SIGNING_DOMAIN + loose_body)]
    encoded, outer_widened = data.draw(loose_encodings(signed))
    if body_widened or outer_widened:
        with pytest.raises(NonCanonicalRecordError):
            PeerRecord.decode(encoded)
    else:
        assert rec == PeerRecord.decode(encoded)


@pytest.mark.parametrize(
    "fields", [{b"op": "discover", "net": "A"}, {"ok": True, b"error": "x"}, {b"zzz": 1, "aaa": 2}]
)
def test_a_protocol_message_with_bin_keys_is_a_schema_error(fields: dict[object, object]) -> None:
    with pytest.raises(RecordSchemaError, match="keys must be msgpack str"):
        decode_message(msgpack.packb(fields))
