"""The on-disk cache of verified peer records: how a restarted peer rejoins when every registry is down."""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from p2pfl.discovery.errors import RecordError
from p2pfl.discovery.records import PeerRecord
from p2pfl.fsutil import atomic_write

log = logging.getLogger("p2pfl.discovery")


@dataclass
class _CacheEntry:
    record: PeerRecord
    last_seen: float


class PeerCache:
    """The verified peer records we have met, persisted atomically as JSON (bounded, newest kept).

    The file is loaded on construction; every entry is re-verified (signature, network), so a tampered or
    corrupt file loses only the bad entries (a wholly unreadable file is logged and ignored, never fatal).
    ``save`` writes a temporary file, fsyncs it and renames it over the old one.
    """

    FORMAT: ClassVar[str] = "p2pfl-peer-cache-v1"
    FILENAME: ClassVar[str] = "peer-cache.json"
    MAX_FILE_BYTES: ClassVar[int] = 16 << 20

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        network_id: str,
        own_peer_id: str | None = None,
        max_entries: int = 256,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.path = Path(path)
        self.network_id = network_id
        self.own_peer_id = own_peer_id
        self.max_entries = max_entries
        self._entries: dict[str, _CacheEntry] = {}
        self.rejected = 0
        self._load()

    @classmethod
    def in_state_dir(
        cls,
        state_dir: str | os.PathLike[str],
        *,
        network_id: str,
        own_peer_id: str | None = None,
        max_entries: int = 256,
    ) -> PeerCache:
        """The cache file ``<state_dir>/peer-cache.json`` (the directory is created if needed)."""
        directory = Path(state_dir)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(
            directory / cls.FILENAME, network_id=network_id, own_peer_id=own_peer_id, max_entries=max_entries
        )

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, record: PeerRecord, *, seen: float | None = None) -> bool:
        """Remember ``record`` (newest seq per peer wins). Returns whether the cache changed."""
        if record.network_id != self.network_id or record.peer_id == self.own_peer_id:
            return False
        now = time.time() if seen is None else seen
        old = self._entries.get(record.peer_id)
        if old is not None and old.record.seq > record.seq:
            return False
        if old is not None and old.record.seq == record.seq and old.last_seen >= now:
            return False
        self._entries[record.peer_id] = _CacheEntry(record, now)
        self._trim()
        return True

    def remove(self, peer_id: str) -> None:
        self._entries.pop(peer_id, None)

    def records(self) -> list[PeerRecord]:
        """Cached records, most recently seen first."""
        return [e.record for e in sorted(self._entries.values(), key=lambda e: -e.last_seen)]

    def save(self) -> None:
        """Write the cache atomically (tmp file + fsync + rename). Raises ``OSError`` on I/O failure."""
        entries = sorted(self._entries.values(), key=lambda e: -e.last_seen)
        doc = {
            "format": self.FORMAT,
            "network": self.network_id,
            "records": [
                {"record": base64.b64encode(e.record.encoded).decode("ascii"), "last_seen": e.last_seen}
                for e in entries
            ],
        }
        atomic_write(self.path, json.dumps(doc, indent=1).encode("utf-8"))

    def _trim(self) -> None:
        if len(self._entries) <= self.max_entries:
            return
        keep = sorted(self._entries.values(), key=lambda e: -e.last_seen)[: self.max_entries]
        self._entries = {e.record.peer_id: e for e in keep}

    def _load(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("event=peer_cache_unreadable path=%s error=%s", self.path, exc)
            return
        try:
            if size > self.MAX_FILE_BYTES:
                raise ValueError(f"{size} bytes exceeds {self.MAX_FILE_BYTES}")
            doc = json.loads(self.path.read_bytes())
            if not isinstance(doc, dict) or doc.get("format") != self.FORMAT:
                raise ValueError(f"not a {self.FORMAT} file")
            items = doc.get("records")
            if not isinstance(items, list):
                raise ValueError("'records' is not a list")
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning("event=peer_cache_ignored path=%s error=%s", self.path, exc)
            return
        for item in items:
            try:
                if not isinstance(item, dict):
                    raise ValueError("entry is not an object")
                raw = base64.b64decode(str(item["record"]), validate=True)
                seen = item.get("last_seen")
                if not isinstance(seen, int | float) or not math.isfinite(seen):
                    raise ValueError("last_seen is not a number")
                record = PeerRecord.decode(raw, network_id=self.network_id)
            except (KeyError, ValueError, RecordError) as exc:
                self.rejected += 1
                log.info("event=peer_cache_entry_rejected path=%s error=%s", self.path, exc)
                continue
            self.add(record, seen=float(seen))
