"""The signed msgpack envelope for every message that crosses the network; spec in ``docs/wire-format.md``.

Layout in one breath: an *envelope* is a 4-element msgpack array ``[version, header, signature, payload]``.
``header`` is a canonical msgpack map carried as opaque bytes and signed (Ed25519, domain-separated) by the
sender, whose public key is embedded in its peer ID. ``payload`` (optional: large ones are fetched separately
by digest) is a msgpack array of named tensors bound to the header by its BLAKE2b-256 digest and size.

Decoding is strict and cheap checks come first: size, outer framing, header schema and canonical form,
network, sender allowed, signature, then payload digest; a payload's shapes are all capped before any array
exists, then its canonical framing, then its values. An accepted input is the one canonical encoding of what
it decodes to. Every malformed input raises a specific :class:`WireError` subclass; nothing else escapes.
The package is pure: no clocks, no I/O. It imports only ``p2pfl.errors``, ``p2pfl.identity``, numpy and
msgpack.

Modules, lowest first (each imports only those above it):

- ``errors``: :class:`WireError` and one subclass per rejection reason slug; :func:`iter_reasons`.
- ``canonical``: shortest msgpack prefixes and the strict unpacker that raises only WireErrors.
- ``limits``: :class:`Limits`, the decoders' size caps.
- ``tensors``: dtype table, payload encoding/decoding with its canonical framing check, digests.
- ``compress``: the lossy delta codecs ``int8`` and ``topk:<density>``.
- ``codecs``: ``raw``/``fp16``/``int8``/``topk:<density>`` (:func:`apply_codec`, :func:`undo_codec`,
  :func:`payload_size`).
- ``header``: :class:`Meta`, :class:`Header` and their canonical encoding and decoding.
- ``envelope``: :func:`seal`, :func:`open_envelope`, :func:`check_payload`, the signed bytes.

Everything is re-exported here; ``from p2pfl.wire import X`` is the import path to use.
"""

from __future__ import annotations

from p2pfl.wire.codecs import CODECS, PayloadSizes, apply_codec, is_codec, payload_size, undo_codec
from p2pfl.wire.envelope import (
    SIGNING_DOMAIN,
    VERSION,
    Envelope,
    check_payload,
    open_envelope,
    seal,
    signed_bytes,
)
from p2pfl.wire.errors import (
    DigestMismatchError,
    DtypeError,
    DuplicateNameError,
    MalformedError,
    MissingFieldError,
    NetworkMismatchError,
    NonCanonicalError,
    NonFiniteError,
    OversizeError,
    SchemaError,
    SenderMismatchError,
    SenderNotAllowedError,
    ShapeError,
    SignatureError,
    TrailingBytesError,
    TruncatedError,
    UnknownFieldError,
    VersionError,
    WireError,
    WrongTypeError,
    iter_reasons,
)
from p2pfl.wire.header import (
    HEADER_FIELDS,
    KINDS,
    META_FIELDS,
    OPTIONAL_HEADER_FIELDS,
    DPClaim,
    Header,
    Meta,
    decode_header,
    encode_header,
    is_network_id,
)
from p2pfl.wire.limits import DEFAULT_LIMITS, Limits
from p2pfl.wire.tensors import (
    DIGEST_SIZE,
    DTYPES,
    ZERO_DIGEST,
    Tensors,
    arch_digest,
    decode_tensors,
    digest,
    encode_tensors,
    model_digest,
    payload_parts,
)

__all__ = [
    "CODECS",
    "DEFAULT_LIMITS",
    "DIGEST_SIZE",
    "DTYPES",
    "HEADER_FIELDS",
    "KINDS",
    "META_FIELDS",
    "OPTIONAL_HEADER_FIELDS",
    "SIGNING_DOMAIN",
    "VERSION",
    "ZERO_DIGEST",
    "DPClaim",
    "DigestMismatchError",
    "DtypeError",
    "DuplicateNameError",
    "Envelope",
    "Header",
    "Limits",
    "MalformedError",
    "Meta",
    "MissingFieldError",
    "NetworkMismatchError",
    "NonCanonicalError",
    "NonFiniteError",
    "OversizeError",
    "PayloadSizes",
    "SchemaError",
    "SenderMismatchError",
    "SenderNotAllowedError",
    "ShapeError",
    "SignatureError",
    "Tensors",
    "TrailingBytesError",
    "TruncatedError",
    "UnknownFieldError",
    "VersionError",
    "WireError",
    "WrongTypeError",
    "apply_codec",
    "arch_digest",
    "check_payload",
    "decode_header",
    "decode_tensors",
    "digest",
    "encode_header",
    "encode_tensors",
    "is_codec",
    "is_network_id",
    "iter_reasons",
    "model_digest",
    "open_envelope",
    "payload_parts",
    "payload_size",
    "seal",
    "signed_bytes",
    "undo_codec",
]
