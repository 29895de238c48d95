"""Equivocation proofs: two validly signed headers of one sender that claim different models for one version.

A peer signs each version of its public model once; two signed headers with the same ``sender`` and ``seq``
but different ``result`` digests can only come from a sender that signed both (signatures cannot be forged),
so the pair is self-verifying evidence: any peer checks the two signatures and bans the sender without
trusting whoever relayed the proof, and without a vote.

Encoding (canonical msgpack, one encoding per pair): ``["equivocation", header_a, sig_a, header_b, sig_b]``,
a 5-element array (``0x95``, so a receiver tells it from a 4-element envelope by its first byte), the tag a
str, then two (canonical header bytes, 64-byte Ed25519 signature) pairs ordered by header bytes
(``header_a < header_b``). :func:`decode_proof` is total: a :class:`Proof` or a :class:`WireError`;
:func:`verify_proof` raises a :class:`WireError` unless the pair proves an equivocation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from p2pfl.identity import SIGNATURE_SIZE, public_key_from_peer_id, verify
from p2pfl.wire.canonical import _pack, _unpack
from p2pfl.wire.envelope import signed_bytes
from p2pfl.wire.errors import (
    MalformedError,
    NetworkMismatchError,
    NonCanonicalError,
    OversizeError,
    SchemaError,
    SignatureError,
    WireError,
    WrongTypeError,
)
from p2pfl.wire.header import Header, decode_header
from p2pfl.wire.limits import DEFAULT_LIMITS, Limits

PROOF_TAG: Final = "equivocation"
#: the first byte of an encoded proof (a 5-element msgpack array); an envelope starts with 0x94
PROOF_FIRST_BYTE: Final = 0x95
#: two headers and two signatures: far below this
MAX_PROOF_BYTES: Final = 4096


@dataclass(frozen=True)
class SignedHeader:
    """A header's canonical bytes with its sender's signature over them."""

    header_bytes: bytes
    signature: bytes


@dataclass(frozen=True)
class Proof:
    """Two signed headers, ordered by their bytes (decoded, not yet verified: see :func:`verify_proof`)."""

    a: SignedHeader
    b: SignedHeader


def make_proof(first: SignedHeader, second: SignedHeader) -> Proof:
    """The proof of two signed headers, in canonical order."""
    a, b = sorted((first, second), key=lambda s: s.header_bytes)
    return Proof(a, b)


def encode_proof(proof: Proof) -> bytes:
    a, b = proof.a, proof.b
    return _pack([PROOF_TAG, a.header_bytes, a.signature, b.header_bytes, b.signature])


def is_proof(data: bytes | memoryview) -> bool:
    """Whether gossip bytes are meant as a proof (first byte); an envelope never starts like one."""
    return len(data) > 0 and data[0] == PROOF_FIRST_BYTE


def decode_proof(data: bytes | memoryview) -> Proof:
    """Parse proof bytes (the form only: :func:`verify_proof` checks what they claim). Raises only
    :class:`WireError`."""
    if len(data) > MAX_PROOF_BYTES:
        raise OversizeError(f"a proof of {len(data)} bytes exceeds {MAX_PROOF_BYTES}")
    raw = _unpack(data, "proof", max_str_len=64, max_bin_len=1024, max_array_len=8, max_map_len=8)
    if not isinstance(raw, list) or len(raw) != 5:
        raise MalformedError("a proof is a 5-element msgpack array")
    tag, ha, sa, hb, sb = raw
    if type(tag) is not str or tag != PROOF_TAG:
        raise SchemaError(f"a proof's tag must be {PROOF_TAG!r}")
    for value in (ha, sa, hb, sb):
        if type(value) is not bytes:
            raise WrongTypeError("a proof's headers and signatures are msgpack bin")
    if len(sa) != SIGNATURE_SIZE or len(sb) != SIGNATURE_SIZE:
        raise WrongTypeError(f"a signature is {SIGNATURE_SIZE} bytes")
    proof = Proof(SignedHeader(ha, sa), SignedHeader(hb, sb))
    if not ha < hb or encode_proof(proof) != bytes(data):
        raise NonCanonicalError("a proof's headers are ordered by their bytes, in canonical msgpack")
    return proof


def verify_proof(proof: Proof, *, network_id: str | None = None, limits: Limits = DEFAULT_LIMITS) -> Header:
    """Check that ``proof`` convicts its sender: both headers decode, are of ``network_id``, name the same
    sender and version, claim different models (``result``) and carry that sender's valid signatures.
    Returns the first header (its ``sender`` is the equivocator). Raises only :class:`WireError`."""
    ha = decode_header(proof.a.header_bytes, limits)
    hb = decode_header(proof.b.header_bytes, limits)
    if network_id is not None and (ha.network_id != network_id or hb.network_id != network_id):
        raise NetworkMismatchError("a proof of another network")
    if ha.sender != hb.sender:
        raise SchemaError("the two headers of a proof have different senders")
    if ha.seq != hb.seq:
        raise SchemaError("the two headers of a proof are of different versions")
    if ha.result == hb.result:
        raise SchemaError("the two headers of a proof claim the same model")
    key = public_key_from_peer_id(ha.sender)
    for signed in (proof.a, proof.b):
        if not verify(key, signed_bytes(signed.header_bytes), signed.signature):
            raise SignatureError(f"a proof's signature does not verify under the key of {ha.sender}")
    return ha


def proof_error(data: bytes | memoryview, network_id: str | None = None) -> tuple[Header | None, str]:
    """(the convicted header, "") for a valid proof, else (None, the reason slug). Never raises."""
    try:
        return verify_proof(decode_proof(data), network_id=network_id), ""
    except WireError as exc:
        return None, exc.reason


__all__ = [
    "MAX_PROOF_BYTES",
    "PROOF_FIRST_BYTE",
    "PROOF_TAG",
    "Proof",
    "SignedHeader",
    "decode_proof",
    "encode_proof",
    "is_proof",
    "make_proof",
    "proof_error",
    "verify_proof",
]
