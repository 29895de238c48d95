"""A peer's durable state in its ``state_dir``: the directory lock, the checkpoint, the version log and
``status.json``; plus the small formatters of what the peer persists and logs.

Each round is persisted before it is broadcast (checkpoint first, then the version log), so a crash never
reuses a version number; the checkpoint carries the round's signed log records, so a failed log append
loses nothing (the next start appends them: ``VersionLog.reconcile``).
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from p2pfl.errors import ConfigError, StateError
from p2pfl.fsutil import atomic_write, remove_stale_temps
from p2pfl.identity import Identity
from p2pfl.protocol import GossipEngine, RoundOutcome
from p2pfl.protocol.bans import BanEntry
from p2pfl.scoring import ScoreRecord
from p2pfl.state import BanRecord, Checkpoint, VersionLog, load_checkpoint, save_checkpoint

log = logging.getLogger("p2pfl.peer")


class PeerStore:
    """One peer's ``state_dir`` (``directory``; ``None``: the peer keeps nothing on disk).

    Not thread-safe: the peer calls it from one task at a time (its round lock), in a worker thread."""

    def __init__(self, directory: Path | None, identity: Identity, network_id: str) -> None:
        self.directory = directory
        self.identity = identity
        self.network_id = network_id
        self.log: VersionLog | None = None
        #: the version the checkpoint holds (None: none yet)
        self.persisted_seq: int | None = None
        self._lock_fd: int | None = None

    # ----------------------------------------------------------------------------------- lock

    def lock(self) -> None:
        """One running peer per state directory: a second one would interleave the version log."""
        directory = self.directory
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"state_dir {directory} is in use by another running peer") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # -------------------------------------------------------------------------------- restore

    def restore(self) -> Checkpoint | None:
        """Open the state (call with the lock held): remove the temp files a kill -9 left, open the version
        log (a torn tail is truncated), load the checkpoint and append the signed records it carries that
        the log lacks. Returns the checkpoint to resume from (None: a fresh start)."""
        directory = self.directory
        if directory is None:
            return None
        for stale in remove_stale_temps(directory):  # left by a kill -9; we hold the directory's lock
            log.info("removed a stale temp file %s", stale.name)
        self.log = VersionLog(directory, self.identity)
        if self.log.repaired_bytes:
            log.warning(
                "version log had a torn tail of %d bytes after a crash: truncated", self.log.repaired_bytes
            )
        ckpt = load_checkpoint(directory)
        if ckpt is None:
            return None
        if ckpt.peer_id != self.identity.peer_id or ckpt.network_id != self.network_id:
            raise ConfigError(
                f"state_dir {directory} belongs to peer {ckpt.peer_id} in network {ckpt.network_id!r}; "
                "use another state_dir or the matching key and network id"
            )
        recovered = self.log.reconcile(ckpt.pending_log)
        if recovered:
            log.warning(
                "version log lacked %d record(s) of seq %d: appended from the checkpoint", recovered, ckpt.seq
            )
        self.persisted_seq = ckpt.seq
        return ckpt

    def note_restart(self, ckpt: Checkpoint, digest: bytes) -> None:
        """The version log's ``restart`` record, once the peer resumed from ``ckpt``."""
        if self.log is not None:
            self.log.append(
                event="restart",
                seq=ckpt.seq,
                round=ckpt.round,
                digest=digest,
                reason="resumed from checkpoint",
                timestamp_ms=now_ms(),
            )

    # -------------------------------------------------------------------------------- rounds

    def checkpoint(
        self,
        engine: GossipEngine,
        round_: int,
        metrics: dict[str, float],
        pending_log: tuple[bytes, ...] = (),
        *,
        bans: tuple[BanEntry, ...] = (),
    ) -> None:
        directory = self.directory
        if directory is None:
            return
        stamp = now_ms()
        save_checkpoint(
            directory,
            Checkpoint(
                peer_id=self.identity.peer_id,
                network_id=self.network_id,
                seq=engine.seq,
                round=round_,
                own=engine.own_params(),
                public=engine.public_params(),
                metrics=metrics,
                timestamp_ms=stamp,
                pending_log=pending_log,
                public_meta=engine.public_meta,
                bans=tuple(ban_record(b, stamp) for b in bans),
            ),
        )
        self.persisted_seq = engine.seq

    def persist(
        self,
        engine: GossipEngine,
        round_: int,
        outcome: RoundOutcome,
        metrics: dict[str, float],
        notes: Sequence[tuple[str, str]] = (),
        *,
        extra: Sequence[Mapping[str, Any]] = (),
        version: bool = True,
        bans: tuple[BanEntry, ...] = (),
    ) -> None:
        """Checkpoint, then version log: one ``version`` record (unless ``version`` is false: the round
        published nothing, e.g. its privacy budget is spent), one record per note (event, reason), then
        the ``extra`` entries (``VersionLog.append``'s arguments: the rollout's events). ``bans``: the
        engine's ban records (``GossipEngine.ban_snapshot``, taken on the trio side), for the checkpoint."""
        if self.log is None:
            self.checkpoint(engine, round_, metrics, bans=bans)
            return
        entries: list[Mapping[str, Any]] = [version_entry(outcome, round_, metrics)] if version else []
        for event, reason in notes:  # what else happened to this version, each its own signed record
            entries.append(
                {
                    "event": event,
                    "seq": outcome.seq,
                    "round": round_,
                    "digest": outcome.digest,
                    "metrics": metrics,
                    "reason": reason,
                    "timestamp_ms": now_ms(),
                }
            )
        entries.extend(extra)
        records = self.log.prepare(entries)
        self.checkpoint(engine, round_, metrics, tuple(r.encoded() for r in records), bans=bans)
        try:
            self.log.commit(records)
        except StateError as exc:
            raise StateError(
                f"{exc}; the checkpoint holds seq {self.persisted_seq} and its records, which the next "
                "start appends"
            ) from exc.__cause__

    def write_status(self, data: bytes) -> None:
        """``state_dir/status.json`` (atomic)."""
        if self.directory is None:
            return
        path = self.directory / "status.json"
        try:
            atomic_write(path, data)
        except OSError as exc:
            raise StateError(
                f"cannot write {path}: {exc.strerror or exc}; state holds seq {self.persisted_seq}"
            ) from exc


def version_entry(outcome: RoundOutcome, round_: int, metrics: dict[str, float]) -> dict[str, Any]:
    """The ``version`` record of a round: its model digest and every contribution with its evidence."""
    contributions = [
        {
            "peer": c.peer,
            "seq": c.seq,
            "weight": c.weight,
            "score": c.score,
            "status": c.status,
            **components(outcome.scores.get(c.peer)),
        }
        for c in outcome.contributions
    ]
    return {
        "event": "version",
        "seq": outcome.seq,
        "round": round_,
        "digest": outcome.digest,
        "contributions": contributions,
        "metrics": metrics,
        "timestamp_ms": now_ms(),
    }


def format_status(s: Mapping[str, Any]) -> str:
    acc = s["val_accuracy"]
    return (
        f"round={s['round']} seq={s['seq']} val_acc={'-' if acc is None else f'{acc:.4f}'} "
        f"neighbours={s['neighbours']} replicas={s['replicas']} bytes_out={s['bytes_sent']} "
        f"bytes_in={s['bytes_received']} rejected={sum(s['rejected'].values())} evicted={len(s['evicted'])}"
        + _quality_part(s.get("quality") or {})
    )


def _quality_part(q: Mapping[str, float]) -> str:
    """`` serving=SEQ dAUC=+0.0123 dF1=-0.0040`` from a quality snapshot (absent values left out)."""
    out = f" serving={int(q['serving_seq'])}" if "serving_seq" in q else ""
    for key, name in (("delta_auc", "dAUC"), ("delta_f1", "dF1")):
        if key in q:
            out += f" {name}={q[key]:+.4f}"
    return out


def components(record: ScoreRecord | None) -> dict[str, float | None]:
    """A score's evidence for the version log, so an eviction can be explained afterwards: the distance ratio,
    the cosine and the loss score (``None`` where not computed)."""
    if record is None:
        return {}
    return {
        "r": finite_or_none(record.distance),
        "cos": None if record.cosine is None else finite_or_none(record.cosine),
        "loss": record.loss_score,
    }


def finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


#: how far ahead a ban that never ends (``readmit_after_s = inf``) is written: 146,000 years
_FOREVER_MS = 2**62


def ban_record(entry: BanEntry, stamp_ms: int) -> BanRecord:
    """``entry`` on the wall clock, written at ``stamp_ms``."""
    ahead = entry.remaining_s * 1000.0
    ahead_ms = round(ahead) if math.isfinite(ahead) and ahead < _FOREVER_MS else _FOREVER_MS
    return BanRecord(entry.peer, entry.evictions, stamp_ms + ahead_ms, entry.reason)


def ban_entry(record: BanRecord, now: int) -> BanEntry:
    """``record`` read back at ``now`` (Unix ms): the time the peer was down counts towards the ban."""
    return BanEntry(record.peer, record.evictions, max(0, record.until_ms - now) / 1000.0, record.reason)


def now_ms() -> int:
    return int(time.time() * 1000)
