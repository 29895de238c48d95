"""The bootstrap registry's sans-I/O core: a bounded, expiring map network id -> signed peer records.

No sockets and no clock of its own (callers pass ``now``), so every rule is tested without a network;
:mod:`bootstrap.service` serves it over libp2p. Rules: the module docstring of :mod:`bootstrap.service`
and ``docs/bootstrap.md``.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from p2pfl.discovery import (
    MAX_PAGE,
    MAX_REQUEST_BYTES,
    PeerRecord,
    RecordError,
    decode_message,
    encode_message,
)
from p2pfl.errors import ConfigError
from p2pfl.tokenbucket import Buckets

__all__ = ["Registry", "RegistryConfig"]

log = logging.getLogger("bootstrap")


_NETWORK_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_CURSOR: Final = 64
_REQUEST_FIELDS: Final = {
    "register": ({"op", "record"}, set[str]()),
    "unregister": ({"op", "net"}, set[str]()),
    "discover": ({"op", "net", "limit"}, {"cursor"}),
    "status": ({"op"}, set[str]()),
}


@dataclass(frozen=True)
class RegistryConfig:
    """Limits of a registry. Worst-case memory is about ``max_total`` x (record size + ~600 bytes)."""

    max_networks: int = 1000
    max_per_network: int = 10_000
    max_total: int = 50_000
    #: How many networks one peer may be registered in at once.
    max_per_peer: int = 4
    min_ttl: float = 10.0
    max_ttl: float = 7200.0
    #: Token bucket per requesting peer: sustained requests per second and burst size.
    rate_per_second: float = 10.0
    burst: float = 50.0
    #: Peers whose bucket is remembered (least recently seen forgotten first).
    max_rate_entries: int = 10_000

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first inconsistent field (``[registry] field: reason``)."""
        for name in ("max_networks", "max_per_network", "max_total", "max_per_peer", "max_rate_entries"):
            if getattr(self, name) < 1:
                raise ConfigError("registry", name, "must be >= 1")
        if not 0 < self.min_ttl <= self.max_ttl:
            raise ConfigError("registry", "min_ttl/max_ttl", "need 0 < min_ttl <= max_ttl")
        if self.rate_per_second <= 0 or self.burst < 1:
            raise ConfigError("registry", "rate_per_second/burst", "need rate_per_second > 0 and burst >= 1")


class _Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class _Entry:
    encoded: bytes
    seq: int
    expires: float


@dataclass
class _Network:
    entries: dict[str, _Entry] = field(default_factory=dict)
    #: Peer ids in sorted order: cursors are peer ids, so pages stay stable while peers come and go.
    order: list[str] = field(default_factory=list)


class Registry:
    """The registry's state and rules. ``handle`` never raises: every outcome is a response."""

    def __init__(self, config: RegistryConfig | None = None) -> None:
        self.config = config or RegistryConfig()
        self.config.validate()
        #: Extra facts for status answers (the service adds process facts: uptime, RSS, peer id).
        self.info: Callable[[], dict[str, Any]] | None = None
        self._networks: dict[str, _Network] = {}
        self._by_peer: dict[str, set[str]] = {}
        self._total = 0
        self._expiry: list[tuple[float, str, str]] = []
        cfg = self.config
        self._buckets = Buckets(cfg.rate_per_second, cfg.burst, cfg.max_rate_entries)
        self.counters: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------ queries
    @property
    def total(self) -> int:
        return self._total

    def network_size(self, network_id: str) -> int:
        net = self._networks.get(network_id)
        return len(net.entries) if net else 0

    def status(self, now: float) -> dict[str, Any]:
        """Counts, limits and counters (plus ``info()``): what ``--health`` and status lines show."""
        st: dict[str, Any] = {
            "networks": len(self._networks),
            "registrations": self._total,
            "peers": len(self._by_peer),
            "limits": asdict(self.config),
            "counters": dict(sorted(self.counters.items())),
        }
        if self.info is not None:
            st.update(self.info())
        return st

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # ---------------------------------------------------------------------------------------- requests
    def handle(self, requester: str, data: bytes, now: float) -> bytes:
        """Answer one request from the authenticated peer ``requester``."""
        self._count("requests")
        wait = self._take_token(requester, now)
        if wait > 0:
            return self._error("rate_limited", "too many requests; slow down", retry_after=round(wait, 3))
        try:
            msg = decode_message(data, max_len=MAX_REQUEST_BYTES)
            op = msg.get("op")
            if not isinstance(op, str) or op not in _REQUEST_FIELDS:
                raise _Refused("unknown_op", f"op must be one of {sorted(_REQUEST_FIELDS)}")
            required, optional = _REQUEST_FIELDS[op]
            keys = set(msg)
            if not required <= keys or not keys <= required | optional:
                raise _Refused(
                    "schema",
                    f"{op} takes fields {sorted(required)} (optional {sorted(optional)}), got {sorted(keys)}",
                )
            if op == "register":
                resp = self._register(requester, msg["record"], now)
            elif op == "unregister":
                resp = self._unregister(requester, self._net_field(msg))
            elif op == "discover":
                resp = self._discover(msg, now)
            else:
                resp = {"status": self.status(now)}
            self._count(f"ok_{op}")
            return encode_message({"ok": True, **resp})
        except _Refused as exc:
            return self._error(exc.reason, exc.detail)
        except RecordError as exc:
            return self._error(exc.reason, str(exc))
        except Exception as exc:  # a bug must not take the service down; the peer gets a generic error
            log.error("event=internal_error peer=%s error=%s: %s", requester, type(exc).__name__, exc)
            log.debug("traceback of the internal error", exc_info=exc)
            return self._error("internal", type(exc).__name__)

    def _error(self, reason: str, detail: str, *, retry_after: float | None = None) -> bytes:
        self._count(f"error_{reason}")
        fields: dict[str, Any] = {"ok": False, "error": reason, "detail": detail[:512]}
        if retry_after is not None:
            fields["retry_after"] = retry_after
        return encode_message(fields)

    def _take_token(self, peer: str, now: float) -> float:
        """Token bucket per peer; returns 0 when allowed, else seconds until a token is available."""
        return self._buckets.wait(peer, now)

    @staticmethod
    def _net_field(msg: dict[str, Any]) -> str:
        net = msg["net"]
        if not isinstance(net, str) or not _NETWORK_ID_RE.fullmatch(net):
            raise _Refused("schema", "net must be 1-64 characters of [A-Za-z0-9._-]")
        return net

    def _register(self, requester: str, raw: object, now: float) -> dict[str, Any]:
        if not isinstance(raw, bytes):
            raise _Refused("schema", "record must be msgpack bin (the encoded signed record)")
        # The record must be the requester's own: checked before the signature (cheap first).
        record = PeerRecord.decode(raw, peer_id=requester)
        cfg = self.config
        ttl = min(max(float(record.ttl), cfg.min_ttl), cfg.max_ttl)
        net = self._networks.get(record.network_id)
        old = net.entries.get(requester) if net is not None else None
        if old is not None:
            if record.seq < old.seq or (record.seq == old.seq and raw != old.encoded):
                raise _Refused("stale_seq", f"seq {record.seq} is not newer than the registered {old.seq}")
        else:
            if len(self._by_peer.get(requester, ())) >= cfg.max_per_peer:
                raise _Refused(
                    "peer_limit", f"a peer may be registered in at most {cfg.max_per_peer} networks"
                )
            if net is None and len(self._networks) >= cfg.max_networks:
                raise _Refused(
                    "network_limit", f"the registry holds its maximum of {cfg.max_networks} networks"
                )
            if net is not None and len(net.entries) >= cfg.max_per_network:
                raise _Refused("network_full", f"network holds its maximum of {cfg.max_per_network} peers")
            if self._total >= cfg.max_total:
                raise _Refused("registry_full", f"the registry holds its maximum of {cfg.max_total} records")
        if net is None:
            net = self._networks[record.network_id] = _Network()
        expires = now + ttl
        net.entries[requester] = _Entry(raw, record.seq, expires)
        if old is None:
            bisect.insort(net.order, requester)
            self._by_peer.setdefault(requester, set()).add(record.network_id)
            self._total += 1
        heapq.heappush(self._expiry, (expires, record.network_id, requester))
        if len(self._expiry) > 2 * self._total + 1024:  # renewals leave stale heap entries behind
            self._expiry = [
                (e.expires, n, p) for n, nw in self._networks.items() for p, e in nw.entries.items()
            ]
            heapq.heapify(self._expiry)
        log.info(
            "event=%s net=%s peer=%s seq=%d ttl=%g addrs=%d",
            "renew" if old is not None else "register",
            record.network_id,
            requester,
            record.seq,
            ttl,
            len(record.addrs),
        )
        return {"ttl": ttl}

    def _remove(self, network_id: str, peer: str) -> bool:
        net = self._networks.get(network_id)
        if net is None or net.entries.pop(peer, None) is None:
            return False
        i = bisect.bisect_left(net.order, peer)
        del net.order[i]
        if not net.entries:
            del self._networks[network_id]
        nets = self._by_peer[peer]
        nets.discard(network_id)
        if not nets:
            del self._by_peer[peer]
        self._total -= 1
        return True

    def _unregister(self, requester: str, network_id: str) -> dict[str, Any]:
        removed = self._remove(network_id, requester)
        if removed:
            log.info("event=unregister net=%s peer=%s", network_id, requester)
        return {"removed": removed}

    def _discover(self, msg: dict[str, Any], now: float) -> dict[str, Any]:
        network_id = self._net_field(msg)
        limit = msg["limit"]
        if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
            raise _Refused("schema", f"limit must be an integer in 1..{MAX_PAGE}")
        cursor = msg.get("cursor")
        if cursor is not None and (not isinstance(cursor, str) or len(cursor) > _MAX_CURSOR):
            raise _Refused("schema", f"cursor must be a string of at most {_MAX_CURSOR} characters")
        net = self._networks.get(network_id)
        if net is None:
            return {"records": [], "next": None}
        start = bisect.bisect_right(net.order, cursor) if cursor is not None else 0
        records: list[bytes] = []
        last: str | None = None
        i = start
        while i < len(net.order) and len(records) < limit:
            peer = net.order[i]
            entry = net.entries[peer]
            if entry.expires > now:
                records.append(entry.encoded)
                last = peer
            i += 1
        more = i < len(net.order)
        return {"records": records, "next": last if more and last is not None else None}

    # ----------------------------------------------------------------------------------------- expiry
    def sweep(self, now: float) -> list[tuple[str, str]]:
        """Drop expired registrations; return their (network id, peer id)."""
        expired: list[tuple[str, str]] = []
        while self._expiry and self._expiry[0][0] <= now:
            expires, network_id, peer = heapq.heappop(self._expiry)
            net = self._networks.get(network_id)
            entry = net.entries.get(peer) if net is not None else None
            if entry is not None and entry.expires == expires and self._remove(network_id, peer):
                expired.append((network_id, peer))
                log.info("event=expire net=%s peer=%s", network_id, peer)
        if expired:
            self.counters["expired"] = self.counters.get("expired", 0) + len(expired)
        return expired
