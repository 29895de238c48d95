"""The ``/p2pfl/bootstrap/1`` wire: its constants and bounds, and strict msgpack that raises only
:class:`~p2pfl.discovery.errors.RecordError`."""

from __future__ import annotations

from typing import Any, Final

import msgpack

from p2pfl.discovery.errors import MalformedRecordError, OversizeRecordError, RecordError, RecordSchemaError

PROTOCOL_ID: Final = "/p2pfl/bootstrap/1"
RECORD_VERSION: Final = 1
SIGNING_DOMAIN: Final = b"p2pfl/peer-record/v1\x00"

#: Bounds every record obeys; a registry may be stricter, never looser.
MAX_RECORD_BYTES: Final = 4096
MAX_ADDRS: Final = 8
MAX_ADDR_LEN: Final = 256
MAX_TTL: Final = 7 * 24 * 3600
#: Default lifetime a peer asks for; registries clamp it (10 s .. 2 h by default).
DEFAULT_TTL: Final = 300
#: Largest page a registry returns; requests asking for more are refused.
MAX_PAGE: Final = 100
#: Bound for one request and one response of the protocol (a full page of maximal records fits).
MAX_REQUEST_BYTES: Final = 16 * 1024
MAX_RESPONSE_BYTES: Final = MAX_PAGE * (MAX_RECORD_BYTES + 16) + 4096


def _reject_ext(code: int, data: bytes) -> Any:
    raise MalformedRecordError(f"msgpack extension types are not allowed (got ext type {code})")


def _unpack(data: bytes, what: str, *, max_len: int) -> Any:
    """Strict msgpack decoding that raises only :class:`RecordError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedRecordError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_len:
        raise OversizeRecordError(f"{what}: {len(data)} bytes exceeds the limit of {max_len}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_reject_ext,
            timestamp=0,
            max_bin_len=max_len,
            max_str_len=max_len,
            max_array_len=max(MAX_PAGE, MAX_ADDRS, 16),
            max_map_len=32,
        )
    except RecordError:
        raise
    except msgpack.ExtraData:
        raise MalformedRecordError(f"{what}: trailing bytes after the msgpack value") from None
    except UnicodeDecodeError:
        raise MalformedRecordError(f"{what}: a string is not valid UTF-8") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedRecordError(f"{what}: not valid msgpack ({str(exc) or type(exc).__name__})") from None


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def encode_message(fields: dict[str, Any]) -> bytes:
    """Encode a protocol request or response (a msgpack map with keys in sorted order)."""
    return _pack({k: fields[k] for k in sorted(fields)})


def decode_message(data: bytes, *, max_len: int = MAX_RESPONSE_BYTES) -> dict[str, Any]:
    """Decode a protocol message: a msgpack map with string keys, else :class:`RecordError`."""
    msg = _unpack(data, "message", max_len=max_len)
    if not isinstance(msg, dict):
        raise RecordSchemaError(f"message must be a msgpack map, got {type(msg).__name__}")
    if not all(type(k) is str for k in msg):  # bin keys next to str keys would break sorting and lookups
        raise RecordSchemaError("message keys must be msgpack str")
    return msg
