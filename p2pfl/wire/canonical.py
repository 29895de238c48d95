"""msgpack forms: the shortest (canonical) prefix of each type, and a strict unpacker that raises only
:class:`~p2pfl.wire.errors.WireError`.

An accepted input is the one canonical encoding of what it decodes to; the encoders here build exactly what
``msgpack.packb`` produces, so framing can be compared byte for byte instead of re-packing values.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from p2pfl.wire.errors import (
    MalformedError,
    OversizeError,
    TrailingBytesError,
    TruncatedError,
    WireError,
    WrongTypeError,
)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _bin_prefix(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + bytes([n])
    if n < 1 << 16:
        return b"\xc5" + struct.pack(">H", n)
    if n < 1 << 32:
        return b"\xc6" + struct.pack(">I", n)
    raise OversizeError(f"a msgpack bin holds at most 4 GiB, got {n} bytes")


def _str_prefix(n: int) -> bytes:
    if n < 32:
        return bytes([0xA0 | n])
    if n < 1 << 8:
        return b"\xd9" + bytes([n])
    if n < 1 << 16:
        return b"\xda" + struct.pack(">H", n)
    return b"\xdb" + struct.pack(">I", n)


def _uint_bytes(n: int) -> bytes:
    """The shortest msgpack form of an unsigned integer below 2**64 (what msgpack.packb produces)."""
    if n < 0x80:
        return bytes([n])
    if n < 1 << 8:
        return b"\xcc" + bytes([n])
    if n < 1 << 16:
        return b"\xcd" + struct.pack(">H", n)
    if n < 1 << 32:
        return b"\xce" + struct.pack(">I", n)
    return b"\xcf" + struct.pack(">Q", n)


def _array_prefix(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def _reject_ext(code: int, data: bytes) -> Any:
    raise WrongTypeError(f"msgpack extension types are not allowed (got ext type {code})")


def _unpack(data: bytes | memoryview, what: str, **limits: int) -> Any:
    """msgpack.unpackb that raises only WireErrors, classifying truncation and trailing bytes."""
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True, ext_hook=_reject_ext, timestamp=0, **limits
        )
    except WireError:
        raise
    except msgpack.ExtraData:
        raise TrailingBytesError(f"{what}: trailing bytes after the msgpack value") from None
    except UnicodeDecodeError:
        raise WrongTypeError(f"{what}: a string is not valid UTF-8") from None
    except ValueError as exc:  # msgpack's FormatError, StackError and limit errors are ValueErrors
        if "incomplete" in str(exc):
            raise TruncatedError(f"{what}: input ends before the msgpack value does") from None
        if "exceeds max_" in str(exc):
            raise OversizeError(f"{what}: a value exceeds its size limit ({exc})") from None
        raise MalformedError(f"{what}: not valid msgpack ({str(exc) or type(exc).__name__})") from None
    except (TypeError, OverflowError, RecursionError) as exc:  # e.g. unhashable map keys
        raise MalformedError(f"{what}: not valid msgpack ({exc})") from None
