"""Crash-safe file writes shared by key files, checkpoints, status files and the peer cache."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

#: the names :func:`write_temp` gives: ``.<name>.<12 hex digits>.tmp``
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def write_temp(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a new private (0600) temporary file next to ``name`` and fsync it."""
    tmp = directory / f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete temp files that a killed process left in ``directory``; the ones removed.

    Only safe while no other process writes there (the peer holds the state directory's lock).
    """
    removed = []
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        if _TEMP_NAME.match(entry.name) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers and crashes see the old content or the new, never a mix.

    On failure no temp file is left, and the ``OSError`` names ``path`` (not the temp file).
    """
    try:
        tmp = write_temp(path.parent, path.name, data)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
