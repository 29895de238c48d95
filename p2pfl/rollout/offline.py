"""``p2pfl versions``: read a stopped (or running) peer's versions, and promote or roll back by hand.

A manual promotion or rollback is a signed ``rollout_promote``/``rollout_rollback`` record that the operator
appends with the peer's key while the peer is stopped: the state directory's lock is taken first, so a
running peer is refused (one writer per log). The peer reads the log's rollout records at start
(:func:`p2pfl.rollout.replay`) and serves what the last of them says. Only versions whose model is kept
(``state_dir/models``: the serving, candidate, base and a few earlier serving versions) can be served.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pfl.errors import ConfigError, StateError
from p2pfl.identity import Identity
from p2pfl.peer_store import PeerStore
from p2pfl.rollout.models import ModelStore
from p2pfl.rollout.policy import EVENTS, PROMOTE, ROLLBACK, RolloutState, replay
from p2pfl.state import LogRecord, VersionLog, read_log, verify_log


@dataclass(frozen=True)
class VersionRow:
    seq: int
    round: int
    metrics: dict[str, float]
    roles: tuple[str, ...]  # "serving", "shadow", "canary", "previous", "kept"


def _records(directory: Path) -> list[LogRecord]:
    report = verify_log(directory)
    if not report.ok:
        p = report.problem
        assert p is not None
        raise StateError(f"version log in {directory} does not verify at record {p.index}: {p.reason}")
    return read_log(directory)


def state_of(records: list[LogRecord]) -> RolloutState:
    return replay((r.event, r.seq) for r in records)


def rows(directory: Path) -> tuple[list[VersionRow], RolloutState, list[LogRecord]]:
    """One row per own version in the log, with its metrics and its roles in the rollout."""
    records = _records(directory)
    state = state_of(records)
    kept = set(ModelStore(directory, records[0].peer_id, "").seqs())
    out = []
    for r in records:
        if r.event != "version":
            continue
        roles = []
        if r.seq == state.serving:
            roles.append("serving")
        if r.seq == state.candidate and state.phase:
            roles.append(state.phase)
        if r.seq in state.previous:
            roles.append("previous")
        if r.seq in kept:
            roles.append("kept")
        out.append(VersionRow(r.seq, r.round, dict(r.metrics), tuple(roles)))
    return out, state, records


def history(records: list[LogRecord], seq: int | None = None) -> list[dict[str, Any]]:
    """The rollout events (of ``seq``, or all), oldest first."""
    return [
        {"index": r.index, "event": r.event, "seq": r.seq, "round": r.round, "reason": r.reason, **r.metrics}
        for r in records
        if r.event in EVENTS and (seq is None or r.seq == seq)
    ]


def _append(directory: Path, identity: Identity, event: str, seq: int, reason: str) -> LogRecord:
    records = _records(directory)
    if records[0].peer_id != identity.peer_id:
        raise ConfigError(
            f"the key is peer {identity.peer_id}, the log in {directory} is {records[0].peer_id}"
        )
    versions = {r.seq: r for r in records if r.event == "version"}
    if seq not in versions:
        raise ConfigError(
            f"seq {seq} is not a version in {directory} (versions {min(versions, default=0)}..)"
        )
    kept = ModelStore(directory, identity.peer_id, "").seqs()
    if seq not in kept:
        raise ConfigError(
            f"the model of seq {seq} is not kept in {directory / 'models'} (kept: "
            f"{', '.join(map(str, kept)) or 'none'}): only a kept version can be served"
        )
    if state_of(records).serving == seq:
        raise ConfigError(f"seq {seq} is already the serving version")
    log = VersionLog(directory, identity)
    v = versions[seq]
    return log.append(
        event=event,
        seq=seq,
        round=v.round,
        digest=v.digest,
        reason=f"manual: {reason}",
        timestamp_ms=int(time.time() * 1000),
    )


def _locked(directory: Path, identity: Identity) -> PeerStore:
    store = PeerStore(directory, identity, "")
    try:
        store.lock()
    except ConfigError:
        raise ConfigError(
            f"state_dir {directory} is in use by a running peer: stop it first (a manual promotion is a "
            "record the peer reads at start)"
        ) from None
    return store


def promote(directory: Path, identity: Identity, seq: int, reason: str) -> LogRecord:
    """Append a signed manual ``rollout_promote`` of ``seq`` (the peer must be stopped)."""
    store = _locked(directory, identity)
    try:
        return _append(directory, identity, PROMOTE, seq, reason)
    finally:
        store.unlock()


def rollback(directory: Path, identity: Identity, to: int | None, reason: str) -> LogRecord:
    """Append a signed manual ``rollout_rollback`` to ``to`` (default: the previous serving version)."""
    store = _locked(directory, identity)
    try:
        if to is None:
            previous = state_of(_records(directory)).previous
            if not previous:
                raise ConfigError("no earlier serving version to roll back to: give --to SEQ")
            to = previous[-1]
        return _append(directory, identity, ROLLBACK, to, reason)
    finally:
        store.unlock()
