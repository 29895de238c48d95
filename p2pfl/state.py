"""A peer's durable state: atomic checkpoints and a signed, hash-chained version log.

Checkpoints are written to a temporary file, fsynced, and renamed over the old one, so a ``kill -9`` at any
moment leaves the last good checkpoint loadable. Each checkpoint ends with a BLAKE2b digest of its body, so a
torn or corrupted file is detected rather than half-loaded.

The version log is append-only: one record per own model version (and per rollback or restart), each holding
the BLAKE2b hash of the previous record and an Ed25519 signature by the peer. ``verify_log`` (``p2pfl audit
verify DIR``) replays the chain and reports the first broken record. A crash mid-append leaves a torn tail,
which the next open truncates (and reports) before appending.

This module does file I/O but no networking and reads no clock: callers pass timestamps.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack
import numpy as np
import numpy.typing as npt

from p2pfl.errors import StateError
from p2pfl.fsutil import atomic_write
from p2pfl.identity import Identity, public_key_from_peer_id, verify
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


@dataclass(frozen=True)
class Checkpoint:
    """Everything needed to resume: own model, last published public model and its version, metrics."""

    peer_id: str
    network_id: str
    seq: int
    round: int
    own: Params
    public: Params
    metrics: dict[str, float] = field(default_factory=dict)
    timestamp_ms: int = 0

    def to_bytes(self) -> bytes:
        body = _pack(
            {
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
        )
        return body + _h(body)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "checkpoint") -> Checkpoint:
        if len(data) < _DIGEST or _h(data[:-_DIGEST]) != data[-_DIGEST:]:
            raise StateError(f"{where} is truncated or corrupt (digest mismatch)")
        try:
            raw = msgpack.unpackb(data[:-_DIGEST], raw=False)
            if raw.get("v") != 1:
                raise StateError(f"{where} has unsupported version {raw.get('v')!r}")
            return cls(
                peer_id=str(raw["peer"]),
                network_id=str(raw["net"]),
                seq=int(raw["seq"]),
                round=int(raw["round"]),
                own=decode_tensors(raw["own"]),
                public=decode_tensors(raw["public"]),
                metrics={str(k): float(v) for k, v in raw["metrics"].items()},
                timestamp_ms=int(raw["ts"]),
            )
        except StateError:
            raise
        except (WireError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"{where} is malformed: {exc}") from None


def save_checkpoint(directory: Path, ckpt: Checkpoint, name: str = CHECKPOINT_NAME) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    atomic_write(path, ckpt.to_bytes())
    return path


def load_checkpoint(directory: Path, name: str = CHECKPOINT_NAME) -> Checkpoint | None:
    """The checkpoint in ``directory``, None if there is none; ``StateError`` if it is corrupt."""
    path = directory / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
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
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / LOG_NAME
        self.identity = identity
        self.repaired_bytes = 0
        records, good_end, problem = _scan(self.path)
        if problem is not None and problem.kind != "torn":
            raise StateError(f"version log {self.path} is broken at record {problem.index}: {problem.reason}")
        if problem is not None:  # a crash mid-append: drop the torn tail
            self.repaired_bytes = self.path.stat().st_size - good_end
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
        self.count = len(records)
        self.last_hash = _h(records[-1].encoded()) if records else GENESIS
        self.last: LogRecord | None = records[-1] if records else None

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
        unsigned = LogRecord(
            index=self.count,
            peer_id=self.identity.peer_id,
            event=event,
            seq=seq,
            round=round,
            digest=digest,
            prev=self.last_hash,
            contributions=list(contributions or []),
            metrics={k: float(v) for k, v in sorted((metrics or {}).items())},
            reason=reason,
            timestamp_ms=timestamp_ms,
            signature=b"",
        )
        sig = self.identity.sign(LOG_DOMAIN + _pack(unsigned.body()))
        record = LogRecord(**{**unsigned.__dict__, "signature": sig})
        data = record.encoded()
        with open(self.path, "ab") as fh:
            fh.write(_LEN.pack(len(data)) + data)
            fh.flush()
            os.fsync(fh.fileno())
        self.count += 1
        self.last_hash = _h(data)
        self.last = record
        return record


@dataclass(frozen=True)
class LogProblem:
    index: int
    kind: str  # "torn" (incomplete tail) or "broken" (bad content, link or signature)
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


def _parse_record(frame: bytes) -> LogRecord:
    raw = msgpack.unpackb(frame, raw=False)
    if not isinstance(raw, dict):
        raise ValueError("record is not a map")
    return LogRecord(
        index=int(raw["index"]),
        peer_id=str(raw["peer"]),
        event=str(raw["event"]),
        seq=int(raw["seq"]),
        round=int(raw["round"]),
        digest=bytes(raw["digest"]),
        prev=bytes(raw["prev"]),
        contributions=list(raw["contrib"]),
        metrics={str(k): float(v) for k, v in raw["metrics"].items()},
        reason=str(raw["reason"]),
        timestamp_ms=int(raw["ts"]),
        signature=bytes(raw["sig"]),
    )


def _scan(path: Path, peer_id: str | None = None) -> tuple[list[LogRecord], int, LogProblem | None]:
    """Verify the chain; return the good records, the byte offset where they end, and the first problem."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0, None
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
        except Exception as exc:
            return (
                records,
                start,
                LogProblem(index, "broken", f"malformed record ({type(exc).__name__}: {exc})"),
            )
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
            key = public_key_from_peer_id(record.peer_id)
        except Exception:
            return records, start, LogProblem(index, "broken", "record names an invalid peer id")
        if not verify(key, LOG_DOMAIN + _pack(record.body()), record.signature):
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
    """Check the whole version log in ``directory``: hash links, signatures, indices, increasing seqs."""
    path = directory / LOG_NAME
    if not path.exists():
        raise StateError(f"no version log at {path}")
    records, _, problem = _scan(path, peer_id)
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


# ----------------------------------------------------------------------------------------- rollback


@dataclass
class RollbackGuard:
    """Reverts to the best recent version when validation accuracy falls more than ``margin`` below it.

    Keeps the best version of the last ``window`` rounds in memory (a copy of its parameters). Pure logic:
    the peer logs the rollback and writes the checkpoint.
    """

    margin: float = 0.15
    window: int = 10
    warmup: int = 5
    _history: list[tuple[int, float, Params]] = field(default_factory=list)
    _seen: int = 0

    def observe(self, round_: int, accuracy: float, params: Params) -> tuple[int, float, Params] | None:
        """Record this round's accuracy; return (round, accuracy, params) of the version to revert to, if any.

        Nothing is reverted during the first ``warmup`` observations: early mixing of non-IID neighbours moves
        the local validation accuracy a lot without anything being wrong.
        """
        self._seen += 1
        best = max(self._history, key=lambda t: t[1], default=None)
        if self._seen > self.warmup and best is not None and accuracy < best[1] - self.margin:
            return best
        self._history.append((round_, accuracy, {k: np.array(v, copy=True) for k, v in params.items()}))
        self._history = self._history[-self.window :]
        return None
