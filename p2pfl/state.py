"""A peer's durable state: atomic checkpoints and a signed, hash-chained version log.

Checkpoints are written to a temporary file, fsynced, and renamed over the old one, so a ``kill -9`` at any
moment leaves the last good checkpoint loadable. Each checkpoint ends with a BLAKE2b digest of its body, so a
torn or corrupted file is detected rather than half-loaded.

The version log is append-only: one record per own model version (and per rollback or restart), each holding
the BLAKE2b hash of the previous record and an Ed25519 signature by the peer. ``verify_log`` (``p2pfl audit
verify DIR``) replays the chain and reports the first broken record. A crash mid-append leaves a torn tail,
which the next open truncates (and reports) before appending.

Order of a round's writes: the version records are signed first and carried inside the checkpoint
(``pending_log``), the checkpoint is written, then the records are appended to the log. If the append fails
(disk full), the checkpoint still holds the records and the next open appends them
(:meth:`VersionLog.reconcile`), so the log never loses the record of a checkpointed version. Every write
failure is a ``StateError`` caused by the ``OSError``, naming the file and what is persisted.

This module does file I/O but no networking and reads no clock: callers pass timestamps.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack
import numpy.typing as npt

from p2pfl.errors import P2PFLError, StateError
from p2pfl.fsutil import atomic_write
from p2pfl.identity import Identity, public_key_from_peer_id, verify
from p2pfl.protocol.guards import RollbackGuard as RollbackGuard  # noqa: PLC0414 (re-export)
from p2pfl.wire import WireError, decode_tensors, encode_tensors

CHECKPOINT_NAME: Final = "checkpoint.p2ck"
BEST_NAME: Final = "best.p2ck"
LOG_NAME: Final = "versions.log"
LOG_DOMAIN: Final = b"p2pfl/version-log/v1\x00"
_DIGEST: Final = 32
_LEN: Final = struct.Struct(">I")
_MAX_RECORD: Final = 16 * 1024 * 1024
GENESIS: Final = bytes(_DIGEST)

Params = dict[str, npt.NDArray[Any]]


def _h(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST).digest()


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------- checkpoints


_MAX_PENDING: Final = 16  # version records carried by one checkpoint (a version plus its notes)


def _field(raw: Mapping[Any, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``raw[key]`` if it has the expected type (``bool`` is not an ``int`` here), else a ``StateError``."""
    if key not in raw:
        raise StateError(f"{where} is malformed: field {key!r} is missing")
    value = raw[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise StateError(f"{where} is malformed: field {key!r} has type {type(value).__name__}")
    return value


def _tensors(data: bytes, key: str, where: str) -> Params:
    try:
        return decode_tensors(data)
    except (WireError, ValueError, TypeError, OverflowError) as exc:  # a total decoder says WireError
        raise StateError(f"{where} is malformed: {key} tensors do not decode ({exc})") from None


@dataclass(frozen=True)
class Checkpoint:
    """Everything needed to resume: own model, last published public model and its version, metrics.

    ``pending_log`` holds the encoded version-log records of this version, so that a log append that
    fails after the checkpoint was written loses nothing (see the module docstring).
    """

    peer_id: str
    network_id: str
    seq: int
    round: int
    own: Params
    public: Params
    metrics: dict[str, float] = field(default_factory=dict)
    timestamp_ms: int = 0
    pending_log: tuple[bytes, ...] = ()

    def to_bytes(self) -> bytes:
        fields: dict[str, Any] = {
            "v": 1,
            "peer": self.peer_id,
            "net": self.network_id,
            "seq": self.seq,
            "round": self.round,
            "own": encode_tensors(self.own),
            "public": encode_tensors(self.public),
            "metrics": {k: float(v) for k, v in sorted(self.metrics.items())},
            "ts": self.timestamp_ms,
        }
        if self.pending_log:
            fields["log"] = list(self.pending_log)
        body = _pack(fields)
        return body + _h(body)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "checkpoint") -> Checkpoint:
        """Decode and check a checkpoint. Total: any bytes give a Checkpoint or a ``StateError``."""
        if len(data) < _DIGEST or _h(data[:-_DIGEST]) != data[-_DIGEST:]:
            raise StateError(f"{where} is truncated or corrupt (digest mismatch)")
        try:
            raw = msgpack.unpackb(data[:-_DIGEST], raw=False)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # every unpack failure
            raise StateError(f"{where} is malformed: not a msgpack map ({type(exc).__name__})") from None
        if not isinstance(raw, dict):
            raise StateError(f"{where} is malformed: not a msgpack map")
        version = raw.get("v")
        if version != 1 or isinstance(version, bool):
            shown = version if isinstance(version, (int, str)) else type(version).__name__
            raise StateError(f"{where} has unsupported version {shown!r}")
        metrics_raw = _field(raw, "metrics", dict, where)
        metrics: dict[str, float] = {}
        for k, v in metrics_raw.items():
            if not isinstance(k, str) or not isinstance(v, (int, float)) or isinstance(v, bool):
                raise StateError(f"{where} is malformed: metrics must map names to numbers")
            metrics[k] = float(v)
        pending = raw.get("log", [])
        if (
            not isinstance(pending, list)
            or len(pending) > _MAX_PENDING
            or not all(isinstance(r, bytes) for r in pending)
        ):
            raise StateError(f"{where} is malformed: field 'log' must be a short list of records")
        return cls(
            peer_id=_field(raw, "peer", str, where),
            network_id=_field(raw, "net", str, where),
            seq=_field(raw, "seq", int, where),
            round=_field(raw, "round", int, where),
            own=_tensors(_field(raw, "own", bytes, where), "own", where),
            public=_tensors(_field(raw, "public", bytes, where), "public", where),
            metrics=metrics,
            timestamp_ms=_field(raw, "ts", int, where),
            pending_log=tuple(pending),
        )


def save_checkpoint(directory: Path, ckpt: Checkpoint, name: str = CHECKPOINT_NAME) -> Path:
    """Atomically replace the checkpoint; on failure the old one stays and no temp file is left."""
    path = directory / name
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(path, ckpt.to_bytes())
    except OSError as exc:
        raise StateError(
            f"cannot write checkpoint {path}: {exc.strerror or exc}; it still holds the previous version "
            f"(seq {ckpt.seq} was not persisted)"
        ) from exc
    return path


def load_checkpoint(directory: Path, name: str = CHECKPOINT_NAME) -> Checkpoint | None:
    """The checkpoint in ``directory``, None if there is none; ``StateError`` if it is corrupt."""
    path = directory / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from None
    return Checkpoint.from_bytes(data, str(path))


# --------------------------------------------------------------------------------------- version log


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


class VersionLog:
    """Append-only signed hash chain in ``directory/versions.log``."""

    def __init__(self, directory: Path, identity: Identity) -> None:
        self.path = directory / LOG_NAME
        self.identity = identity
        self.repaired_bytes = 0
        records, good_end, problem = _scan(self.path)
        if problem is not None and problem.kind != "torn":
            raise StateError(f"version log {self.path} is broken at record {problem.index}: {problem.reason}")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if problem is not None:  # a crash mid-append: drop the torn tail
                self.repaired_bytes = self.path.stat().st_size - good_end
                with open(self.path, "r+b") as fh:
                    fh.truncate(good_end)
        except OSError as exc:
            raise StateError(f"cannot repair version log {self.path}: {exc.strerror or exc}") from exc
        self._end = good_end
        self.count = len(records)
        self.last_hash = _h(records[-1].encoded()) if records else GENESIS
        self.last: LogRecord | None = records[-1] if records else None

    def prepare(self, entries: Sequence[Mapping[str, Any]]) -> list[LogRecord]:
        """Sign records that follow the log's current tail, in order, without writing them.

        Each entry holds :meth:`append`'s keyword arguments. Pass the result to :meth:`commit`.
        """
        out: list[LogRecord] = []
        prev, index = self.last_hash, self.count
        for entry in entries:
            record = self._sign(index=index, prev=prev, **entry)
            out.append(record)
            prev, index = _h(record.encoded()), index + 1
        return out

    def commit(self, records: Sequence[LogRecord]) -> None:
        """Append prepared records: all of them, or none (a partial write is cut off again).

        ``StateError`` (caused by the ``OSError``) if the disk refuses; the log then still ends at its last
        good record, so the caller may stop and restart safely.
        """
        if not records:
            return
        if records[0].index != self.count or records[0].prev != self.last_hash:
            raise StateError(f"version log {self.path}: records were prepared for another tail")
        data = b"".join(_LEN.pack(len(e)) + e for e in (r.encoded() for r in records))
        try:
            with open(self.path, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            self._cut_back()
            last = self.last.seq if self.last is not None else None
            raise StateError(
                f"cannot append to version log {self.path}: {exc.strerror or exc}; it ends at record "
                f"{self.count - 1} (seq {last})"
            ) from exc
        self._end += len(data)
        self.count += len(records)
        self.last_hash = _h(records[-1].encoded())
        self.last = records[-1]

    def _cut_back(self) -> None:
        """Best effort after a failed append: truncate to the last good record (the next open would too)."""
        try:
            with open(self.path, "r+b") as fh:
                fh.truncate(self._end)
        except OSError:
            pass

    def reconcile(self, encoded: Sequence[bytes]) -> int:
        """Append the records a checkpoint carries that the log lacks (its append failed); how many.

        A record already in the log is skipped; one that does not follow the log's tail is refused
        (``StateError``): the log and the checkpoint disagree, and guessing would hide it.
        """
        added = 0
        for data in encoded:
            try:
                record = _parse_record(data)
            except StateError as exc:
                raise StateError(f"checkpoint carries a malformed version record: {exc}") from None
            if record.index < self.count:
                continue
            if record.index != self.count or record.prev != self.last_hash or record.encoded() != data:
                raise StateError(
                    f"version log {self.path} holds {self.count} records, but the checkpoint carries record "
                    f"{record.index} that does not follow them: the log was replaced or truncated by hand"
                )
            if record.peer_id != self.identity.peer_id or not _signature_ok(record):
                raise StateError("checkpoint carries a version record not signed by this peer")
            self.commit([record])
            added += 1
        return added

    def _sign(
        self,
        *,
        index: int,
        prev: bytes,
        event: str,
        seq: int,
        round: int,
        digest: bytes,
        contributions: list[dict[str, Any]] | None = None,
        metrics: Mapping[str, float] | None = None,
        reason: str = "",
        timestamp_ms: int = 0,
    ) -> LogRecord:
        unsigned = LogRecord(
            index=index,
            peer_id=self.identity.peer_id,
            event=event,
            seq=seq,
            round=round,
            digest=digest,
            prev=prev,
            contributions=list(contributions or []),
            metrics={k: float(v) for k, v in sorted((metrics or {}).items())},
            reason=reason,
            timestamp_ms=timestamp_ms,
            signature=b"",
        )
        sig = self.identity.sign(LOG_DOMAIN + _pack(unsigned.body()))
        return LogRecord(**{**unsigned.__dict__, "signature": sig})

    def append(
        self,
        *,
        event: str,
        seq: int,
        round: int,
        digest: bytes,
        contributions: list[dict[str, Any]] | None = None,
        metrics: Mapping[str, float] | None = None,
        reason: str = "",
        timestamp_ms: int = 0,
    ) -> LogRecord:
        """Sign and append one record (``StateError`` if the disk refuses, see :meth:`commit`)."""
        [record] = self.prepare(
            [
                {
                    "event": event,
                    "seq": seq,
                    "round": round,
                    "digest": digest,
                    "contributions": contributions,
                    "metrics": metrics,
                    "reason": reason,
                    "timestamp_ms": timestamp_ms,
                }
            ]
        )
        self.commit([record])
        return record


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


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records: int
    peer_id: str | None
    problem: LogProblem | None
    last_seq: int | None


def verify_log(directory: Path, peer_id: str | None = None) -> VerifyReport:
    """Check the whole version log in ``directory``: hash links, signatures, indices, increasing seqs.

    A log without records is not ``ok`` (problem kind "empty"): it proves nothing about the peer.
    """
    path = directory / LOG_NAME
    if not path.is_file():
        raise StateError(f"no version log at {path}")
    records, _, problem = _scan(path, peer_id)
    if problem is None and not records:
        problem = LogProblem(0, "empty", "the log holds no records")
    return VerifyReport(
        ok=problem is None,
        records=len(records),
        peer_id=records[0].peer_id if records else peer_id,
        problem=problem,
        last_seq=records[-1].seq if records else None,
    )


def read_log(directory: Path) -> list[LogRecord]:
    """The verified records (up to the first problem, if any)."""
    records, _, _ = _scan(directory / LOG_NAME)
    return records
