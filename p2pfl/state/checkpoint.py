"""Atomic, self-checking checkpoints: everything a peer needs to resume.

Checkpoints are written to a temporary file, fsynced, and renamed over the old one, so a ``kill -9`` at any
moment leaves the last good checkpoint loadable. Each checkpoint ends with a BLAKE2b digest of its body, so a
torn or corrupted file is detected rather than half-loaded; :meth:`Checkpoint.from_bytes` is total.

Order of a round's writes: the version records are signed first and carried inside the checkpoint
(``pending_log``), the checkpoint is written, then the records are appended to the log. If the append fails
(disk full), the checkpoint still holds the records and the next open appends them
(:meth:`~p2pfl.state.versionlog.VersionLog.reconcile`), so the log never loses the record of a checkpointed
version. Every write failure is a ``StateError`` caused by the ``OSError``, naming the file and what is
persisted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

import msgpack
import numpy.typing as npt

from p2pfl.errors import StateError
from p2pfl.fsutil import atomic_write
from p2pfl.wire import DIGEST_SIZE, Meta, WireError, decode_tensors, digest, encode_tensors

CHECKPOINT_NAME: Final = "checkpoint.p2ck"
BEST_NAME: Final = "best.p2ck"

Params = dict[str, npt.NDArray[Any]]


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


_MAX_PENDING: Final = 16  # version records carried by one checkpoint (a version plus its notes)
_MAX_BANS: Final = 100_000  # ban records (the engine bounds them far below: p2pfl.protocol.churn)
_MAX_BAN_TEXT: Final = 256  # characters of a banned peer id or a conviction's reason


class BanRecord(NamedTuple):
    """A ban as a checkpoint keeps it (``p2pfl.protocol.bans.BanEntry`` on the wall clock): evictions so
    far, when the current ban ends (Unix ms; past: expired, the count kept) and a conviction's reason."""

    peer: str
    evictions: int
    until_ms: int
    reason: str | None = None


def _text(value: object, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def _bans(raw: Mapping[Any, Any], where: str) -> tuple[BanRecord, ...]:
    """The optional ``bans`` list (absent in checkpoints written before it: none)."""
    items = raw.get("bans", [])
    if not isinstance(items, list) or len(items) > _MAX_BANS:
        raise StateError(f"{where} is malformed: field 'bans' must be a list of at most {_MAX_BANS} records")
    out: list[BanRecord] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 4):
            raise StateError(f"{where} is malformed: a ban record must be [peer, count, until_ms, reason]")
        peer, count, until, reason = item
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (count, until))
        if not (_text(peer, _MAX_BAN_TEXT) and ints and count >= 0 and until >= 0):
            raise StateError(f"{where} is malformed: a ban record has a bad peer, count or expiry")
        if reason is not None and not _text(reason, _MAX_BAN_TEXT):
            raise StateError(f"{where} is malformed: a ban record's reason must be a short string or nil")
        out.append(BanRecord(peer, count, until, reason))
    return tuple(out)


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


def _public_meta(raw: Mapping[Any, Any], where: str) -> Meta | None:
    """The optional ``pmeta`` map (absent in checkpoints written before it: None)."""
    if "pmeta" not in raw:
        return None
    m = _field(raw, "pmeta", dict, where)
    if not set(m) <= {"round", "samples", "loss"}:
        raise StateError(f"{where} is malformed: field 'pmeta' has unknown keys")
    try:
        return Meta(samples=m.get("samples"), loss=m.get("loss"), round=m.get("round"))
    except WireError as exc:
        raise StateError(f"{where} is malformed: field 'pmeta': {exc}") from None


@dataclass(frozen=True)
class Checkpoint:
    """Everything needed to resume: own model, last published public model and its version, metrics.

    ``pending_log`` holds the encoded version-log records of this version, so that a log append that
    fails after the checkpoint was written loses nothing (see the module docstring). ``public_meta``: the
    public version's own meta as signed when it was published (its round can be earlier than ``round``:
    rounds that published nothing, e.g. a spent privacy budget); a restored peer's snapshots carry it.
    None in a checkpoint written before it was kept. ``bans``: the peer's ban records (none in a checkpoint
    written before they were kept), so a restart does not readmit the poisoners it evicted.
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
    public_meta: Meta | None = None
    bans: tuple[BanRecord, ...] = ()

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
        if self.public_meta is not None:
            fields["pmeta"] = self.public_meta.to_wire()
        if self.bans:
            fields["bans"] = [list(b) for b in self.bans]
        body = _pack(fields)
        return body + digest(body)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "checkpoint") -> Checkpoint:
        """Decode and check a checkpoint. Total: any bytes give a Checkpoint or a ``StateError``."""
        if len(data) < DIGEST_SIZE or digest(data[:-DIGEST_SIZE]) != data[-DIGEST_SIZE:]:
            raise StateError(f"{where} is truncated or corrupt (digest mismatch)")
        try:
            raw = msgpack.unpackb(data[:-DIGEST_SIZE], raw=False)
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
            public_meta=_public_meta(raw, where),
            bans=_bans(raw, where),
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
