"""The version log writer: an append-only signed hash chain in ``directory/versions.log``.

One record per own model version (and per rollback, refused mix or restart). Opening the log verifies the
chain and truncates (and reports) a torn tail left by a crash mid-append; a broken chain is refused. Records
are signed in advance (:meth:`VersionLog.prepare`) so a checkpoint can carry them, then appended all or none
(:meth:`VersionLog.commit`); records a checkpoint carries that the log lacks, because the append after it
failed, are appended on the next open (:meth:`VersionLog.reconcile`).

File I/O but no networking and no clock: callers pass timestamps.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from p2pfl.errors import StateError
from p2pfl.identity import Identity
from p2pfl.state.records import (
    _LEN,
    GENESIS,
    LOG_DOMAIN,
    LOG_NAME,
    LogRecord,
    _h,
    _pack,
    _parse_record,
    _scan,
    _signature_ok,
)


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
