"""Equivocation proofs: a total codec and a verifier that only a real equivocation satisfies."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.identity import Identity
from p2pfl.wire import SIGNING_DOMAIN, Header, WireError, encode_header
from p2pfl.wire.proof import (
    Proof,
    SignedHeader,
    decode_proof,
    encode_proof,
    is_proof,
    make_proof,
    proof_error,
    verify_proof,
)

ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)


def header(who: Identity, seq: int = 3, result: int = 1, net: str = "t", ts: int = 0) -> Header:
    return Header(
        kind="delta",
        network_id=net,
        sender=who.peer_id,
        seq=seq,
        base=bytes(32),
        result=bytes([result]) * 32,
        arch=bytes([9]) * 32,
        payload_digest=bytes([7]) * 32,
        payload_size=10,
        timestamp_ms=ts,
    )


def signed(h: Header, by: Identity | None = None) -> SignedHeader:
    hb = encode_header(h)
    signer = by or ALICE
    return SignedHeader(hb, signer.sign(SIGNING_DOMAIN + hb))


def test_a_real_equivocation_verifies_and_names_its_sender() -> None:
    proof = make_proof(signed(header(ALICE, result=1)), signed(header(ALICE, result=2)))
    data = encode_proof(proof)
    assert is_proof(data)
    assert decode_proof(data) == proof
    assert ALICE.peer_id == verify_proof(decode_proof(data), network_id="t").sender
    # the same pair in the other order is the same proof, byte for byte
    assert data == encode_proof(make_proof(proof.b, proof.a))


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        # one signature by someone else (the attacker frames alice with a header it signed itself)
        (signed(header(ALICE, result=1)), signed(header(ALICE, result=2), by=BOB), "bad_signature"),
        # two different senders, each honest
        (signed(header(ALICE, result=1)), signed(header(BOB, result=2), by=BOB), "schema"),
        # the same model twice (e.g. a re-signed snapshot of one version): no contradiction
        (signed(header(ALICE, result=1, ts=1)), signed(header(ALICE, result=1, ts=2)), "schema"),
        # two honest consecutive versions replayed as a pair
        (signed(header(ALICE, seq=3, result=1)), signed(header(ALICE, seq=4, result=2)), "schema"),
        # another network's headers
        (signed(header(ALICE, result=1, net="x")), signed(header(ALICE, result=2, net="x")), "wrong_network"),
    ],
)
def test_a_forged_or_innocent_pair_convicts_no_one(
    first: SignedHeader, second: SignedHeader, reason: str
) -> None:
    data = encode_proof(make_proof(first, second))
    assert (None, reason) == proof_error(data, "t")


def test_a_signature_moved_to_the_other_header_fails() -> None:
    a, b = signed(header(ALICE, result=1)), signed(header(ALICE, result=2))
    swapped = make_proof(SignedHeader(a.header_bytes, b.signature), SignedHeader(b.header_bytes, a.signature))
    assert (None, "bad_signature") == proof_error(encode_proof(swapped), "t")


def test_the_same_header_twice_is_not_canonical() -> None:
    a = signed(header(ALICE))
    with pytest.raises(WireError) as exc:
        decode_proof(encode_proof(Proof(a, a)))
    assert "non_canonical" == exc.value.reason


def test_unordered_headers_are_not_canonical() -> None:
    p = make_proof(signed(header(ALICE, result=1)), signed(header(ALICE, result=2)))
    assert (None, "non_canonical") == proof_error(encode_proof(Proof(p.b, p.a)), "t")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (["equivocation", b"a", b"s" * 64, b"b"], "malformed"),
        (["other", b"a", b"s" * 64, b"b", b"s" * 64], "schema"),
        (["equivocation", "a", b"s" * 64, b"b", b"s" * 64], "wrong_type"),
        (["equivocation", b"a", b"s" * 63, b"b", b"s" * 64], "wrong_type"),
        ({"equivocation": 1}, "malformed"),
    ],
)
def test_malformed_proofs_name_their_reason(value: object, reason: str) -> None:
    assert (None, reason) == proof_error(msgpack.packb(value, use_bin_type=True), "t")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_decode_proof_is_total(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_proof(b"\x95" + data)
    header_, reason = proof_error(data)
    assert header_ is None and reason


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 2**32), st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**40))
def test_proofs_round_trip(seq: int, r1: int, r2: int, ts: int) -> None:
    h1 = header(ALICE, seq=seq, result=r1, ts=ts)
    h2 = replace(h1, result=bytes([r2]) * 32, timestamp_ms=ts + 1)
    proof = make_proof(signed(h1), signed(h2))
    assert decode_proof(encode_proof(proof)) == proof
    convicted, reason = proof_error(encode_proof(proof), "t")
    assert (convicted is not None) == (r1 != r2), reason
