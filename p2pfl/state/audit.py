"""Reading the version log back: ``p2pfl audit verify DIR`` and the verified records.

A log without records is not ``ok``: it proves nothing about the peer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from p2pfl.errors import StateError
from p2pfl.state.records import LOG_NAME, LogProblem, LogRecord, _scan


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
