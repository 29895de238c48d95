"""The envelope: ``[version, header, signature, payload]``, sealed by the sender and opened by receivers.

``header`` is signed (Ed25519, domain-separated) by the sender, whose public key is embedded in its peer ID.
``payload`` (optional: large ones are fetched separately by digest) is bound to the header by its BLAKE2b-256
digest and size.

Opening is strict and cheap checks come first: size, outer framing, header schema and canonical form,
network, sender allowed, signature, then payload digest. Which reason wins when several apply is specified
in ``docs/wire-format.md`` section 9.

Performance: sealing hashes the payload parts in place and copies them once (``bytes.join`` over buffer
views); opening takes the payload as a zero-copy view of the input, so at most two copies of a payload are
alive at any time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from p2pfl.identity import SIGNATURE_SIZE, Identity, public_key_from_peer_id, verify
from p2pfl.wire.canonical import _bin_prefix, _pack
from p2pfl.wire.errors import (
    DigestMismatchError,
    MalformedError,
    NetworkMismatchError,
    NonCanonicalError,
    OversizeError,
    SenderMismatchError,
    SenderNotAllowedError,
    SignatureError,
    TrailingBytesError,
    TruncatedError,
    VersionError,
    WrongTypeError,
)
from p2pfl.wire.header import Header, decode_header, encode_header
from p2pfl.wire.limits import DEFAULT_LIMITS, Limits
from p2pfl.wire.tensors import DIGEST_SIZE, digest

VERSION: Final = 1
SIGNING_DOMAIN: Final = b"p2pfl/envelope/v1\x00"


@dataclass(frozen=True)
class Envelope:
    """An opened (verified) envelope. ``payload`` is a read-only view into the input, or None."""

    header: Header
    signature: bytes
    header_bytes: bytes
    payload: memoryview | None = field(default=None, compare=False)


def signed_bytes(header_bytes: bytes) -> bytes:
    """Exactly what the sender signs: the domain tag followed by the header's canonical bytes."""
    return SIGNING_DOMAIN + header_bytes


def seal(identity: Identity, header: Header, payload: Iterable[bytes | memoryview] | bytes | None) -> bytes:
    """Sign ``header`` and frame it with the (optional) payload into envelope bytes.

    ``payload`` may be the parts from :func:`~p2pfl.wire.tensors.payload_parts` (no intermediate copy) or
    plain bytes. The header's digest and size must describe it; that is checked here so a bad envelope is
    never sent.
    """
    if header.sender != identity.peer_id:
        raise SenderMismatchError(f"header.sender {header.sender} is not this identity ({identity.peer_id})")
    header_bytes = encode_header(header)
    sig = identity.sign(signed_bytes(header_bytes))
    parts: list[bytes | memoryview] = [b"\x94", _pack(VERSION), _bin_prefix(len(header_bytes)), header_bytes]
    parts += (_bin_prefix(len(sig)), sig)
    if payload is None:
        parts.append(b"\xc0")
    else:
        body = [payload] if isinstance(payload, bytes | memoryview) else list(payload)
        size = sum(memoryview(p).nbytes for p in body)
        h = hashlib.blake2b(digest_size=DIGEST_SIZE)
        for part in body:
            h.update(part)
        if size != header.payload_size or h.digest() != header.payload_digest:
            raise DigestMismatchError("header.payload_digest/payload_size do not describe the payload given")
        parts.append(_bin_prefix(size))
        parts += body
    return b"".join(parts)


class _Reader:
    """Strict reader of the envelope's fixed outer framing, with zero-copy access to the payload."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise TruncatedError(f"envelope ends inside {what}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def bin_or_nil(self, what: str) -> memoryview | None:
        tag = self.byte(what)
        if tag == 0xC0:
            return None
        widths = {0xC4: 1, 0xC5: 2, 0xC6: 4}
        if tag not in widths:
            raise WrongTypeError(f"{what} must be msgpack bin (got type byte 0x{tag:02x})")
        n = int.from_bytes(self.take(widths[tag], what), "big")
        if _bin_prefix(n)[0] != tag:
            raise NonCanonicalError(f"{what}: length {n} is not in its shortest bin encoding")
        return self.take(n, what)


def open_envelope(
    data: bytes | bytearray | memoryview,
    *,
    limits: Limits = DEFAULT_LIMITS,
    network_id: str | None = None,
    allowed: Callable[[str], bool] | None = None,
    expected_sender: str | None = None,
    before_signature: Callable[[Header], None] | None = None,
) -> Envelope:
    """Verify and decode envelope bytes, cheapest checks first. Raises only :class:`WireError` (and what
    ``before_signature`` raises).

    ``network_id``: reject envelopes of other networks. ``allowed``: access-list predicate on the sender.
    ``expected_sender``: the peer this message must come from (e.g. the peer a fetch was sent to).
    ``before_signature``: called with the decoded, not yet verified header just before the (costly)
    signature check; it refuses by raising (a receiver's per-sender rate limit, see p2pfl.protocol.ratelimit).
    """
    view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    if len(view) > limits.max_envelope:
        raise OversizeError(f"envelope of {len(view)} bytes exceeds the limit of {limits.max_envelope}")
    reader = _Reader(view)
    tag = reader.byte("envelope")
    if tag != 0x94:
        raise MalformedError(f"an envelope is a 4-element msgpack array (got type byte 0x{tag:02x})")
    version = reader.byte("version")
    if version > 0x7F:
        raise WrongTypeError("envelope version must be a small positive integer")
    if version != VERSION:
        raise VersionError(f"envelope version {version} is not supported (this is version {VERSION})")
    header_view = reader.bin_or_nil("header")
    sig_view = reader.bin_or_nil("signature")
    payload = reader.bin_or_nil("payload")
    if header_view is None or sig_view is None:
        raise WrongTypeError("header and signature must be msgpack bin, not nil")
    if reader.pos != len(view):
        raise TrailingBytesError(f"{len(view) - reader.pos} trailing bytes after the envelope")
    if len(header_view) > limits.max_header:
        raise OversizeError(f"header of {len(header_view)} bytes exceeds the limit of {limits.max_header}")
    if len(sig_view) != SIGNATURE_SIZE:
        raise WrongTypeError(f"signature must be {SIGNATURE_SIZE} bytes, got {len(sig_view)}")
    header_bytes = bytes(header_view)
    header = decode_header(header_bytes, limits)
    if network_id is not None and header.network_id != network_id:
        raise NetworkMismatchError(f"envelope is for network {header.network_id!r}, not {network_id!r}")
    if allowed is not None and not allowed(header.sender):
        raise SenderNotAllowedError(f"sender {header.sender} is not allowed in this network")
    if before_signature is not None:
        before_signature(header)
    signature = bytes(sig_view)
    if not verify(public_key_from_peer_id(header.sender), signed_bytes(header_bytes), signature):
        raise SignatureError(f"signature does not verify under the key of sender {header.sender}")
    if expected_sender is not None and header.sender != expected_sender:
        raise SenderMismatchError(f"envelope is signed by {header.sender}, expected {expected_sender}")
    if payload is not None:
        check_payload(payload, header)
    return Envelope(header=header, signature=signature, header_bytes=header_bytes, payload=payload)


def check_payload(payload: bytes | memoryview, header: Header) -> None:
    """Check that ``payload`` (inline, or fetched separately by digest) is the one the header signed."""
    size = memoryview(payload).nbytes
    if size != header.payload_size:
        raise DigestMismatchError(f"payload has {size} bytes; the header says {header.payload_size}")
    if digest(payload) != header.payload_digest:
        raise DigestMismatchError("payload does not match the digest in the signed header")
