"""The version log's on-disk format: length-prefixed, signed records chained by hash, and the chain check.

Each record holds the BLAKE2b hash of the previous record's bytes (the first one :data:`GENESIS`) and an
Ed25519 signature by the peer over its body (domain-separated by :data:`LOG_DOMAIN`). :func:`_scan`
replays the chain and stops at the first problem: a *torn* tail (a crash mid-append, which the next open
truncates) or a *broken* record (bad content, link, index, peer, signature or seq order). Decoding a record
is total: a ``LogRecord`` or a ``StateError``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack

from p2pfl.errors import P2PFLError, StateError
from p2pfl.identity import public_key_from_peer_id, verify

LOG_NAME: Final = "versions.log"
LOG_DOMAIN: Final = b"p2pfl/version-log/v1\x00"
_DIGEST: Final = 32
_LEN: Final = struct.Struct(">I")
_MAX_RECORD: Final = 16 * 1024 * 1024
GENESIS: Final = bytes(_DIGEST)


def _h(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST).digest()


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class LogRecord:
    """One entry of the version log (``event``: "version", "rollback", "mix_refused" or "restart")."""

    index: int
    peer_id: str
    event: str
    seq: int
    round: int
    digest: bytes
    prev: bytes
    contributions: list[dict[str, Any]]
    metrics: dict[str, float]
    reason: str
    timestamp_ms: int
    signature: bytes

    def body(self) -> dict[str, Any]:
        return {
            "contrib": self.contributions,
            "digest": self.digest,
            "event": self.event,
            "index": self.index,
            "metrics": self.metrics,
            "peer": self.peer_id,
            "prev": self.prev,
            "reason": self.reason,
            "round": self.round,
            "seq": self.seq,
            "ts": self.timestamp_ms,
        }

    def encoded(self) -> bytes:
        return _pack({**self.body(), "sig": self.signature})


@dataclass(frozen=True)
class LogProblem:
    index: int
    kind: str  # "torn" (incomplete tail), "broken" (bad content, link or signature) or "empty" (no records)
    reason: str


def _iter_frames(data: bytes) -> Iterator[tuple[int, int, bytes | None]]:
    """(start, end, frame or None if torn) for each length-prefixed frame."""
    pos = 0
    while pos < len(data):
        if pos + _LEN.size > len(data):
            yield pos, len(data), None
            return
        (n,) = _LEN.unpack_from(data, pos)
        if n > _MAX_RECORD or pos + _LEN.size + n > len(data):
            yield pos, len(data), None
            return
        yield pos, pos + _LEN.size + n, data[pos + _LEN.size : pos + _LEN.size + n]
        pos += _LEN.size + n


_RECORD_FIELDS: Final = {
    "index": int,
    "peer": str,
    "event": str,
    "seq": int,
    "round": int,
    "digest": bytes,
    "prev": bytes,
    "contrib": list,
    "metrics": dict,
    "reason": str,
    "ts": int,
    "sig": bytes,
}


def _parse_record(frame: bytes) -> LogRecord:
    """Decode one log record. Total: a ``LogRecord`` or a ``StateError`` saying what is wrong."""
    try:
        raw = msgpack.unpackb(frame, raw=False)
    except UnicodeDecodeError:
        raise StateError("record holds text that is not UTF-8") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise StateError(f"record is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise StateError("record is not a map")
    for key, kind in _RECORD_FIELDS.items():
        value = raw.get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise StateError(f"record field {key!r} is missing or not of type {kind.__name__}")
    if not all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in raw["metrics"].items()):
        raise StateError("record metrics must map names to numbers")
    if not all(isinstance(c, dict) for c in raw["contrib"]):
        raise StateError("record contributions must be maps")
    return LogRecord(
        index=raw["index"],
        peer_id=raw["peer"],
        event=raw["event"],
        seq=raw["seq"],
        round=raw["round"],
        digest=raw["digest"],
        prev=raw["prev"],
        contributions=raw["contrib"],
        metrics={k: float(v) for k, v in raw["metrics"].items()},
        reason=raw["reason"],
        timestamp_ms=raw["ts"],
        signature=raw["sig"],
    )


def _signature_ok(record: LogRecord) -> bool:
    try:
        key = public_key_from_peer_id(record.peer_id)
    except P2PFLError:
        return False
    return verify(key, LOG_DOMAIN + _pack(record.body()), record.signature)


def _scan(path: Path, peer_id: str | None = None) -> tuple[list[LogRecord], int, LogProblem | None]:
    """Verify the chain; return the good records, the byte offset where they end, and the first problem."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0, None
    except OSError as exc:
        raise StateError(f"cannot read version log {path}: {exc.strerror or exc}") from None
    records: list[LogRecord] = []
    prev = GENESIS
    good_end = 0
    expected_peer = peer_id
    for start, end, frame in _iter_frames(data):
        index = len(records)
        if frame is None:
            return records, start, LogProblem(index, "torn", f"incomplete record at byte {start}")
        try:
            record = _parse_record(frame)
        except StateError as exc:
            return records, start, LogProblem(index, "broken", f"malformed record: {exc}")
        if record.encoded() != frame:
            return records, start, LogProblem(index, "broken", "record is not canonically encoded")
        if record.index != index:
            return (
                records,
                start,
                LogProblem(index, "broken", f"index {record.index} where {index} was expected"),
            )
        if record.prev != prev:
            return (
                records,
                start,
                LogProblem(index, "broken", "hash link to the previous record does not match"),
            )
        expected_peer = expected_peer or record.peer_id
        if record.peer_id != expected_peer:
            return (
                records,
                start,
                LogProblem(index, "broken", f"record signed for another peer {record.peer_id}"),
            )
        try:
            public_key_from_peer_id(record.peer_id)
        except P2PFLError:
            return records, start, LogProblem(index, "broken", "record names an invalid peer id")
        if not _signature_ok(record):
            return records, start, LogProblem(index, "broken", "signature does not verify")
        if records and record.event == "version" and record.seq <= records[-1].seq and records[-1].seq > 0:
            return records, start, LogProblem(index, "broken", f"seq {record.seq} does not increase")
        records.append(record)
        prev = _h(frame)
        good_end = end
    return records, good_end, None
