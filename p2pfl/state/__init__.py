"""A peer's durable state: atomic checkpoints and a signed, hash-chained version log.

The version log is append-only: one record per own model version (and per rollback or restart), each holding
the BLAKE2b hash of the previous record and an Ed25519 signature by the peer. ``verify_log`` (``p2pfl audit
verify DIR``) replays the chain and reports the first broken record.

This package does file I/O but no networking and reads no clock: callers pass timestamps. It imports
``p2pfl.wire`` (tensor payloads, digests), ``p2pfl.identity`` and ``p2pfl.fsutil``.

Modules:

- ``checkpoint``: :class:`Checkpoint`, its total decoder, atomic :func:`save_checkpoint` and
  :func:`load_checkpoint`, and the order of a round's writes.
- ``records``: the log's record format (:class:`LogRecord`), its total decoder and the chain check.
- ``versionlog``: :class:`VersionLog`, the writer (prepare, commit all or none, torn-tail repair, reconcile).
- ``audit``: :func:`verify_log` and :func:`read_log`.

Everything is re-exported here; ``from p2pfl.state import X`` is the import path to use.
"""

from __future__ import annotations

from p2pfl.protocol.guards import RollbackGuard
from p2pfl.state.audit import VerifyReport, read_log, verify_log
from p2pfl.state.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    BanRecord,
    Checkpoint,
    Params,
    load_checkpoint,
    save_checkpoint,
)
from p2pfl.state.records import GENESIS, LOG_DOMAIN, LOG_NAME, LogProblem, LogRecord
from p2pfl.state.versionlog import VersionLog

__all__ = [
    "BEST_NAME",
    "CHECKPOINT_NAME",
    "GENESIS",
    "LOG_DOMAIN",
    "LOG_NAME",
    "BanRecord",
    "Checkpoint",
    "LogProblem",
    "LogRecord",
    "Params",
    "RollbackGuard",
    "VerifyReport",
    "VersionLog",
    "load_checkpoint",
    "read_log",
    "save_checkpoint",
    "verify_log",
]
