"""Hostile input to the engine, driven directly: whatever a remote peer sends, the engine returns a counted
rejection attributed to that peer and never raises.

The two concrete triggers of issue 13 (``tests/hostile_bytes.py``) crashed the fetching peer: (a) a header
map with a bytes key next to an unknown string key (``TypeError`` in the header decoder), (b) a validly signed
payload with a tensor of shape ``[0, 2**63]`` (``ValueError`` in the tensor decoder). Those tests assert only
that the input is refused and counted (the reason depends on the decoder). The tests with a decoder patched to
raise prove the engine's own guarantee, whatever the decoder does: ``internal_error``, counted against the
peer, kept as a fault for the caller to log.
"""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import numpy as np
import pytest

import p2pfl.protocol.receive
from p2pfl import wire
from p2pfl.protocol import INTERNAL_ERROR, FetchPayload, GossipEngine, Publish, RequestSnapshot
from p2pfl.wire import Header, open_envelope
from tests.hostile_bytes import bytes_key_envelope, header_for, huge_shape_payload, signed
from tests.protocol.test_engine import Net, engine, train_step


def rejected_from(e: GossipEngine, peer: str) -> int:
    return sum(e.rejections_by_peer.get(peer, {}).values())


def synced_pair(**cfg: object) -> tuple[GossipEngine, GossipEngine]:
    """a published version 1 and b holds it."""
    a, b = engine(1, **cfg), engine(2)
    Net([a, b]).run(a, a.finish_round(train_step(a, 1.0), 1).actions)
    assert 1 == b.replicas[a.peer_id].seq
    return a, b


def bad_delta(a: GossipEngine, b: GossipEngine, payload: bytes, *, seq: int, inline: bool = True) -> bytes:
    """A delta of ``a`` (signed by a's key) carrying ``payload``, on top of a's version ``seq - 1``."""
    header = header_for(
        a.identity, "t", payload, seq=seq, base=a.public_digest, arch=b.layout.arch, result=a.public_digest
    )
    return signed(a.identity, header, payload, inline=inline)


def sized_huge_shape(b: GossipEngine) -> bytes:
    """Trigger (b), padded to the size the model's layout implies (so the declared-size check passes)."""
    payload = huge_shape_payload(b._payload_sizes["raw"])
    assert b._payload_sizes["raw"] == len(payload)
    return payload


def huge_shape_snapshot(a: GossipEngine, b: GossipEngine) -> bytes:
    payload = huge_shape_payload()
    header = header_for(a.identity, "t", payload, kind="snapshot", seq=5, arch=b.layout.arch)
    return signed(a.identity, header, payload)


# ------------------------------------------------------------------------------- the two triggers


def test_a_snapshot_whose_header_has_a_bytes_key_is_refused_and_counted_against_the_peer() -> None:
    a, b = engine(1), engine(2)
    assert [] == b.handle_snapshot(bytes_key_envelope(a.identity, "t"), a.peer_id, 1)
    assert 1 == rejected_from(b, a.peer_id)
    assert {} == b.replicas


def test_a_signed_snapshot_with_a_huge_tensor_shape_is_refused_and_counted_against_the_peer() -> None:
    a, b = engine(1), engine(2)
    assert [] == b.handle_snapshot(huge_shape_snapshot(a, b), a.peer_id, 1)
    assert 1 == rejected_from(b, a.peer_id)
    assert {} == b.replicas


def test_a_join_skips_crafted_snapshots_and_starts_from_the_good_ones() -> None:
    good1, good2, bad1, bad2, joiner = engine(1), engine(3), engine(4), engine(5), engine(2, join_quorum=2)
    for e in (good1, good2):
        e.finish_round(train_step(e, 1.0), 1)
    snaps = {
        good1.peer_id: good1.serve_snapshot(0),
        good2.peer_id: good2.serve_snapshot(0),
        bad1.peer_id: bytes_key_envelope(bad1.identity, "t"),
        bad2.peer_id: huge_shape_snapshot(bad2, joiner),
    }
    assert 2 == joiner.join_from_snapshots(snaps, 1.0)
    assert {good1.peer_id, good2.peer_id} == set(joiner.replicas)
    assert 1 == rejected_from(joiner, bad1.peer_id) == rejected_from(joiner, bad2.peer_id)
    assert np.allclose(joiner.own, good1.public)


def test_the_gossip_validator_refuses_a_bytes_key_envelope_and_counts_it_against_the_forwarder() -> None:
    a, b = engine(1), engine(2)
    relay = engine(3).peer_id
    assert b.accept_gossip(bytes_key_envelope(a.identity, "t", kind="delta"), relay) is False
    assert 1 == rejected_from(b, relay)


def test_the_gossip_validator_refuses_an_inline_delta_that_would_fail_on_delivery() -> None:
    """Not relayed: before, only the inline payload's digest was checked, and the delta failed at delivery
    (here with a ValueError) after gossipsub had forwarded it to every other neighbour."""
    a, b = synced_pair()
    data = bad_delta(a, b, sized_huge_shape(b), seq=2)
    assert b.accept_gossip(data, a.peer_id) is False
    assert 1 == rejected_from(b, a.peer_id)
    # and if it is delivered all the same (another transport, no validator): refused, counted, not applied
    assert [] == b.handle_announce(data, a.peer_id, 2)
    assert 2 == rejected_from(b, a.peer_id)
    assert 1 == b.replicas[a.peer_id].seq


@pytest.mark.parametrize("kind", ["nan", "wrong_shape"])
def test_the_gossip_validator_refuses_inline_deltas_with_bad_tensors(kind: str) -> None:
    a, b = synced_pair()
    pack = lambda o: msgpack.packb(o, use_bin_type=True)  # noqa: E731
    w = np.zeros(12, np.float32)
    if kind == "nan":
        entries = [["b", "float32", [3], np.array([np.nan, 0, 0], np.float32).tobytes()]]
        entries.append(["w", "float32", [3, 4], w.tobytes()])
    else:  # same size, transposed
        entries = [["b", "float32", [3], np.zeros(3, np.float32).tobytes()]]
        entries.append(["w", "float32", [4, 3], w.tobytes()])
    payload = pack(entries)
    assert b._payload_sizes["raw"] == len(payload)
    assert b.accept_gossip(bad_delta(a, b, payload, seq=2), a.peer_id) is False
    assert {"nan": "non_finite", "wrong_shape": "wrong_shape"}[kind] in b.rejections_by_peer[a.peer_id]


def test_the_gossip_validator_still_accepts_honest_deltas_inline_and_announced() -> None:
    a, b = synced_pair()
    pub = a.finish_round(train_step(a, 1.0), 2).actions[0]
    assert isinstance(pub, Publish)
    assert b.accept_gossip(pub.envelope, a.peer_id) is True
    big, c = synced_pair(inline_limit=0)
    pub = big.finish_round(train_step(big, 1.0), 2).actions[0]
    assert isinstance(pub, Publish)
    assert c.accept_gossip(pub.envelope, big.peer_id) is True
    assert 0 == sum(b.rejections.values()) + sum(c.rejections.values())


def test_a_buffered_delta_with_a_huge_shape_is_refused_when_its_snapshot_arrives() -> None:
    a, b = engine(1), engine(2)
    a.finish_round(train_step(a, 1.0), 1)
    snapshot_at_1 = a.serve_snapshot(0)
    data = bad_delta(a, b, sized_huge_shape(b), seq=2)
    # no replica yet: a gap, the delta is buffered and a snapshot requested
    assert [RequestSnapshot(a.peer_id, a.peer_id)] == b.handle_announce(data, a.peer_id, 1)
    assert [] == b.handle_snapshot(snapshot_at_1, a.peer_id, 2)  # drains the buffer: refused there
    assert 1 == b.replicas[a.peer_id].seq
    assert 1 == rejected_from(b, a.peer_id)


def test_a_fetched_payload_with_a_huge_shape_is_refused_and_counted() -> None:
    a, b = synced_pair()
    payload = sized_huge_shape(b)
    (fetch,) = b.handle_announce(bad_delta(a, b, payload, seq=2, inline=False), a.peer_id, 2)
    assert isinstance(fetch, FetchPayload)
    assert [] == b.handle_payload(fetch.header, payload, 2)
    assert 1 == b.replicas[a.peer_id].seq
    assert 1 == rejected_from(b, a.peer_id)


# ------------------------------------------------------------------- any exception from a decoder


ERRORS = [TypeError("bad key"), ValueError("array is too big"), RuntimeError("a bug")]


def raising(error: Exception) -> Callable[..., object]:
    def fn(*args: object, **kwargs: object) -> object:
        raise error

    return fn


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("entry", ["accept_gossip", "handle_announce", "handle_snapshot", "join"])
def test_any_exception_while_opening_an_envelope_is_an_internal_error_counted_against_the_peer(
    monkeypatch: pytest.MonkeyPatch, entry: str, error: Exception
) -> None:
    a, b = synced_pair()
    pub = a.finish_round(train_step(a, 1.0), 2).actions[0]
    assert isinstance(pub, Publish)
    snapshot = a.serve_snapshot(0)
    monkeypatch.setattr(p2pfl.protocol.receive, "open_envelope", raising(error))
    if entry == "accept_gossip":
        assert b.accept_gossip(pub.envelope, a.peer_id) is False
    elif entry == "handle_announce":
        assert [] == b.handle_announce(pub.envelope, a.peer_id, 2)
    elif entry == "handle_snapshot":
        assert [] == b.handle_snapshot(snapshot, a.peer_id, 2)
    else:
        assert 0 == b.join_from_snapshots({a.peer_id: snapshot}, 2)
    assert {INTERNAL_ERROR: 1} == dict(b.rejections_by_peer[a.peer_id])
    (fault,) = b.take_faults()
    assert (a.peer_id, error) == (fault.peer, fault.error)
    assert [] == b.take_faults()
    assert 1 == b.replicas[a.peer_id].seq


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("entry", ["inline", "fetched", "snapshot", "buffered"])
def test_any_exception_while_decoding_tensors_is_an_internal_error_counted_against_the_peer(
    monkeypatch: pytest.MonkeyPatch, entry: str, error: Exception
) -> None:
    a, b = synced_pair(inline_limit=0 if entry == "fetched" else 192 * 1024)
    pub = a.finish_round(train_step(a, 1.0), 2).actions[0]
    assert isinstance(pub, Publish)
    header: Header = open_envelope(pub.envelope).header
    payload = a.serve_payload(header.payload_digest)
    assert payload is not None
    snapshot = a.serve_snapshot(0)
    later = a.finish_round(train_step(a, 1.0), 3).actions[0]
    assert isinstance(later, Publish)
    monkeypatch.setattr(p2pfl.protocol.receive, "decode_tensors", raising(error))
    if entry == "inline":
        assert b.accept_gossip(pub.envelope, a.peer_id) is False
    elif entry == "fetched":
        (fetch,) = b.handle_announce(pub.envelope, a.peer_id, 2)
        assert isinstance(fetch, FetchPayload)
        assert [] == b.handle_payload(fetch.header, payload, 2)
    elif entry == "snapshot":
        assert [] == b.handle_snapshot(snapshot, a.peer_id, 2)
    else:  # the delta waits for a snapshot; applying it after the snapshot raises
        buffered = open_envelope(later.envelope).payload
        assert buffered is not None
        real = wire.decode_tensors
        monkeypatch.setattr(
            p2pfl.protocol.receive,
            "decode_tensors",
            lambda data, **kw: raising(error)() if bytes(data) == bytes(buffered) else real(data, **kw),
        )
        b.replicas.clear()
        assert [RequestSnapshot(a.peer_id, a.peer_id)] == b.handle_announce(later.envelope, a.peer_id, 2)
        assert [] == b.handle_snapshot(snapshot, a.peer_id, 3)
        assert 2 == b.replicas[a.peer_id].seq
    assert 1 == b.rejections_by_peer[a.peer_id][INTERNAL_ERROR], b.rejections_by_peer
    faults = b.take_faults()
    assert faults and all((a.peer_id, error) == (f.peer, f.error) for f in faults)
    assert b.replicas[a.peer_id].seq in (1, 2)


def test_bytes_that_are_not_the_signed_payload_count_against_the_peer_that_served_them() -> None:
    """A relay that serves a wrong payload is blamed, not the sender whose signed digest it fails."""
    a, b = synced_pair(inline_limit=0)
    relay = engine(3).peer_id
    pub = a.finish_round(train_step(a, 1.0), 2).actions[0]
    assert isinstance(pub, Publish)
    (fetch,) = b.handle_announce(pub.envelope, relay, 2)
    assert isinstance(fetch, FetchPayload)
    payload = bytearray(a.serve_payload(fetch.header.payload_digest) or b"")
    payload[-1] ^= 1
    assert [] == b.handle_payload(fetch.header, bytes(payload), 2, relay)
    assert {"digest_mismatch": 1} == dict(b.rejections_by_peer[relay])
    assert 0 == rejected_from(b, a.peer_id)


def test_an_inline_delta_the_validator_decoded_is_not_decoded_again_on_delivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = synced_pair()
    pub = a.finish_round(train_step(a, 1.0), 2).actions[0]
    assert isinstance(pub, Publish)
    calls: list[int] = []
    real = wire.decode_tensors
    monkeypatch.setattr(
        p2pfl.protocol.receive, "decode_tensors", lambda data, **kw: calls.append(1) or real(data, **kw)
    )
    assert b.accept_gossip(pub.envelope, a.peer_id) is True
    assert [] == b.handle_announce(pub.envelope, a.peer_id, 2)
    assert (2, a.public_digest) == (b.replicas[a.peer_id].seq, b.replicas[a.peer_id].digest)
    assert [1] == calls
