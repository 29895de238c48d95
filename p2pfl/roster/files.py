"""Roster and certificate files: their bytes are the canonical encoding (see :mod:`p2pfl.roster.codec`),
read bounded and written atomically, so a peer never reads half a roster an operator is replacing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from p2pfl.fsutil import atomic_write
from p2pfl.roster.codec import (
    MAX_CERT_BYTES,
    MAX_ROSTER_BYTES,
    decode_cert,
    decode_roster,
    encode_cert,
    encode_roster,
)
from p2pfl.roster.errors import RosterError
from p2pfl.roster.model import Certificate, Roster


def read_file(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; else a :class:`RosterError` (an ``OSError``
    when the file cannot be read at all)."""
    p = Path(path)
    with open(p, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise RosterError("not_a_file", f"{what} {p} is not a regular file")
        if st.st_size > limit:
            raise RosterError("oversize", f"{what} {p} is {st.st_size} bytes, above the limit of {limit}")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise RosterError("oversize", f"{what} {p} grew above the limit of {limit} bytes while read")
    return data


def _located(exc: RosterError, p: Path) -> RosterError:
    return RosterError(exc.reason, f"{p}: {exc}")


def load_roster(path: str | os.PathLike[str]) -> Roster:
    """The roster in ``path`` (decoded; verify it with :func:`p2pfl.roster.rules.verify`)."""
    p = Path(path)
    try:
        return decode_roster(read_file(p, MAX_ROSTER_BYTES, "roster file"))
    except RosterError as exc:
        raise _located(exc, p) from None


def save_roster(path: str | os.PathLike[str], roster: Roster) -> None:
    atomic_write(Path(path), encode_roster(roster))


def load_certificate(path: str | os.PathLike[str]) -> Certificate:
    p = Path(path)
    try:
        return decode_cert(read_file(p, MAX_CERT_BYTES, "certificate file"))
    except RosterError as exc:
        raise _located(exc, p) from None


def save_certificate(path: str | os.PathLike[str], cert: Certificate) -> None:
    atomic_write(Path(path), encode_cert(cert))
