"""The :class:`WireError` family: one class per rejection reason, each with a stable ``reason`` slug.

Every malformed input raises one of these and nothing else; the slugs are what peers count rejections by
and what ``docs/wire-format.md`` (section 9: which reason wins when several apply) and the conformance
vectors name. :func:`iter_reasons` lists them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from p2pfl.errors import P2PFLError


class WireError(P2PFLError):
    """Root of every decoding/encoding rejection. ``reason`` is a stable slug used to count rejections."""

    reason: ClassVar[str] = "wire"


class OversizeError(WireError):
    reason = "oversize"


class TruncatedError(WireError):
    reason = "truncated"


class TrailingBytesError(WireError):
    reason = "trailing_bytes"


class MalformedError(WireError):
    """Not valid msgpack, or not the envelope's fixed framing."""

    reason = "malformed"


class SchemaError(WireError):
    reason = "schema"


class MissingFieldError(SchemaError):
    reason = "missing_field"


class UnknownFieldError(SchemaError):
    reason = "unknown_field"


class WrongTypeError(SchemaError):
    reason = "wrong_type"


class NonCanonicalError(SchemaError):
    """Valid msgpack, but not the one canonical encoding (key order, integer width, float width, ...)."""

    reason = "non_canonical"


class VersionError(WireError):
    reason = "unsupported_version"


class NetworkMismatchError(WireError):
    reason = "wrong_network"


class SenderNotAllowedError(WireError):
    reason = "sender_not_allowed"


class SignatureError(WireError):
    reason = "bad_signature"


class SenderMismatchError(WireError):
    """Validly signed, but by someone other than the peer this message was expected from."""

    reason = "sender_mismatch"


class DigestMismatchError(WireError):
    reason = "digest_mismatch"


class DtypeError(WireError):
    reason = "bad_dtype"


class ShapeError(WireError):
    reason = "bad_shape"


class NonFiniteError(WireError):
    reason = "non_finite"


class DuplicateNameError(WireError):
    reason = "duplicate_name"


def iter_reasons() -> Iterator[type[WireError]]:
    """Every concrete rejection class, for counters and docs."""
    stack: list[type[WireError]] = [WireError]
    while stack:
        cls = stack.pop()
        yield cls
        stack.extend(cls.__subclasses__())
