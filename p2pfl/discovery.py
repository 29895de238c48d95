"""Peer discovery: signed peer records, the bootstrap-registry client and the on-disk peer cache.

Spec in ``docs/bootstrap.md``. In one breath:

* A :class:`PeerRecord` says "peer P of network N is reachable at these addresses", signed by P's own
  Ed25519 key (domain-separated). Anyone can verify it from P's peer id alone, so a registry (or a cache file,
  or another peer) that relays it cannot forge or alter addresses: it can only withhold records.
* :class:`BootstrapClient` registers our record with every bootstrap registry that answers, renews it, and
  discovers the network's peers from all registries that answer, verifying every record it receives.
* :class:`PeerCache` keeps the verified records we have met in the peer's state directory (atomic writes,
  bounded), so a restarted peer can rejoin through it when every registry is down.

The protocol ``/p2pfl/bootstrap/1`` rides on the transport's request/response primitive: one msgpack map per
request (``op`` = ``register`` | ``unregister`` | ``discover`` | ``status``), one msgpack map per response
(``ok`` true with results, or ``ok`` false with a stable ``error`` slug and a ``detail`` text).

This module is pure apart from the client's use of the transport and the cache's file I/O: it imports
neither libp2p nor numpy, so the registry service and the peer share it cheaply.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

import msgpack
import trio

from p2pfl.errors import IdentityError, P2PFLError, TransportError
from p2pfl.fsutil import atomic_write
from p2pfl.identity import SIGNATURE_SIZE, Identity, public_key_from_peer_id, verify

if TYPE_CHECKING:
    # trio's own TaskStatus is shadowed by the trio-typing stubs that libp2p pulls in.
    from trio_typing import TaskStatus

__all__ = [
    "DEFAULT_TTL",
    "PROTOCOL_ID",
    "BootstrapClient",
    "DiscoveryError",
    "DiscoveryTransport",
    "PeerCache",
    "PeerRecord",
    "RecordError",
    "RegistryError",
    "RegistryUnavailableError",
    "decode_message",
    "dial_record",
    "encode_message",
    "normalize_addr",
]

log = logging.getLogger(__name__)

PROTOCOL_ID: Final = "/p2pfl/bootstrap/1"
RECORD_VERSION: Final = 1
SIGNING_DOMAIN: Final = b"p2pfl/peer-record/v1\x00"

#: Bounds every record obeys; a registry may be stricter, never looser.
MAX_RECORD_BYTES: Final = 4096
MAX_ADDRS: Final = 8
MAX_ADDR_LEN: Final = 256
MAX_TTL: Final = 7 * 24 * 3600
#: Default lifetime a peer asks for; registries clamp it (10 s .. 2 h by default).
DEFAULT_TTL: Final = 300
#: Largest page a registry returns; requests asking for more are refused.
MAX_PAGE: Final = 100
#: Bound for one request and one response of the protocol (a full page of maximal records fits).
MAX_REQUEST_BYTES: Final = 16 * 1024
MAX_RESPONSE_BYTES: Final = MAX_PAGE * (MAX_RECORD_BYTES + 16) + 4096

_NETWORK_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DNS_RE: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_PORT_RE: Final = re.compile(r"[1-9][0-9]{0,4}")
_MAX_UINT64: Final = (1 << 64) - 1
_BODY_FIELDS: Final = ("addrs", "net", "peer", "seq", "ttl")
_MEMORY_PREFIX: Final = "memory/"


# --------------------------------------------------------------------------------------------- errors


class DiscoveryError(P2PFLError):
    """Root of discovery failures. ``reason`` is a stable slug, used to count rejections."""

    reason: ClassVar[str] = "discovery"


class RecordError(DiscoveryError):
    """A peer record (or a protocol message) is malformed, oversize, non-canonical or wrongly signed."""

    reason = "bad_record"


class MalformedRecordError(RecordError):
    reason = "malformed"


class OversizeRecordError(RecordError):
    reason = "oversize"


class RecordSchemaError(RecordError):
    reason = "schema"


class NonCanonicalRecordError(RecordError):
    reason = "non_canonical"


class RecordSignatureError(RecordError):
    reason = "bad_signature"


class PeerMismatchError(RecordError):
    """Validly signed, but for another peer than the one expected (e.g. a peer registering someone else)."""

    reason = "peer_mismatch"


class NetworkMismatchError(RecordError):
    reason = "wrong_network"


class RegistryError(DiscoveryError):
    """A registry answered with an error response; ``reason`` is the registry's slug."""

    def __init__(self, reason: str, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"registry refused: {reason}: {detail}")
        self.reason = reason  # type: ignore[misc]  # instance slug from the remote
        self.detail = detail
        self.retry_after = retry_after


class RegistryUnavailableError(DiscoveryError):
    """No bootstrap registry answered (all dead, unreachable, or answering garbage)."""

    reason = "registry_unavailable"


# -------------------------------------------------------------------------------------------- msgpack


def _reject_ext(code: int, data: bytes) -> Any:
    raise MalformedRecordError(f"msgpack extension types are not allowed (got ext type {code})")


def _unpack(data: bytes, what: str, *, max_len: int) -> Any:
    """Strict msgpack decoding that raises only :class:`RecordError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedRecordError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_len:
        raise OversizeRecordError(f"{what}: {len(data)} bytes exceeds the limit of {max_len}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_reject_ext,
            timestamp=0,
            max_bin_len=max_len,
            max_str_len=max_len,
            max_array_len=max(MAX_PAGE, MAX_ADDRS, 16),
            max_map_len=32,
        )
    except RecordError:
        raise
    except msgpack.ExtraData:
        raise MalformedRecordError(f"{what}: trailing bytes after the msgpack value") from None
    except UnicodeDecodeError:
        raise MalformedRecordError(f"{what}: a string is not valid UTF-8") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedRecordError(f"{what}: not valid msgpack ({str(exc) or type(exc).__name__})") from None


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def encode_message(fields: dict[str, Any]) -> bytes:
    """Encode a protocol request or response (a msgpack map with keys in sorted order)."""
    return _pack({k: fields[k] for k in sorted(fields)})


def decode_message(data: bytes, *, max_len: int = MAX_RESPONSE_BYTES) -> dict[str, Any]:
    """Decode a protocol message: a msgpack map with string keys, else :class:`RecordError`."""
    msg = _unpack(data, "message", max_len=max_len)
    if not isinstance(msg, dict):
        raise RecordSchemaError(f"message must be a msgpack map, got {type(msg).__name__}")
    if not all(type(k) is str for k in msg):  # bin keys next to str keys would break sorting and lookups
        raise RecordSchemaError("message keys must be msgpack str")
    return msg


# ------------------------------------------------------------------------------------------ addresses


def _check_peer_id(peer_id: object, what: str) -> str:
    if not isinstance(peer_id, str):
        raise RecordSchemaError(f"{what} must be a peer id string, got {type(peer_id).__name__}")
    try:
        public_key_from_peer_id(peer_id)
    except IdentityError as exc:
        raise RecordSchemaError(f"{what}: {exc}") from None
    return peer_id


def normalize_addr(addr: str, peer_id: str) -> str:
    """Check a dialable address of ``peer_id`` and return it ending in ``/p2p/<peer_id>``.

    Accepted: ``/ip4/<a.b.c.d>/tcp/<port>``, ``/ip6/<addr>/tcp/<port>``, ``/dns|dns4|dns6/<name>/tcp/<port>``,
    each optionally followed by ``/p2p/<peer_id>`` (appended when absent), and the in-process form
    ``memory/<peer_id>``. Unspecified hosts (``0.0.0.0``, ``::``) are refused: nobody can dial them. IP
    addresses must be written canonically, so one address has one spelling.
    """
    if not isinstance(addr, str):
        raise RecordSchemaError(f"an address must be a string, got {type(addr).__name__}")
    if len(addr) > MAX_ADDR_LEN:
        raise RecordSchemaError(f"address of {len(addr)} characters exceeds {MAX_ADDR_LEN}")
    if addr.startswith(_MEMORY_PREFIX):
        if addr[len(_MEMORY_PREFIX) :] != peer_id:
            raise PeerMismatchError(f"address {addr!r} is not an address of {peer_id}")
        return addr
    parts = addr.split("/")
    if len(parts) not in (5, 7) or parts[0] != "":
        raise RecordSchemaError(f"address {addr!r} is not /ip4|ip6|dns/<host>/tcp/<port>[/p2p/<peer id>]")
    _, proto, host, transport, port, *tail = parts
    if proto in ("ip4", "ip6"):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise RecordSchemaError(f"address {addr!r}: {host!r} is not an IP address") from None
        if ip.version != (4 if proto == "ip4" else 6) or str(ip) != host:
            raise RecordSchemaError(f"address {addr!r}: {host!r} is not a canonical /{proto} address")
        if ip.is_unspecified:
            raise RecordSchemaError(f"address {addr!r}: an unspecified host cannot be dialed")
    elif proto in ("dns", "dns4", "dns6"):
        if not _DNS_RE.fullmatch(host):
            raise RecordSchemaError(f"address {addr!r}: {host!r} is not a DNS name")
    else:
        raise RecordSchemaError(f"address {addr!r}: protocol /{proto} is not one of ip4, ip6, dns")
    if transport != "tcp" or not _PORT_RE.fullmatch(port) or int(port) > 65535:
        raise RecordSchemaError(f"address {addr!r}: expected /tcp/<port 1-65535>")
    if tail:
        if tail[0] != "p2p":
            raise RecordSchemaError(f"address {addr!r}: only /p2p/<peer id> may follow the port")
        if tail[1] != peer_id:
            raise PeerMismatchError(f"address {addr!r} names peer {tail[1]!r}, not {peer_id}")
        return addr
    return f"{addr}/p2p/{peer_id}"


# --------------------------------------------------------------------------------------------- record


@dataclass(frozen=True)
class PeerRecord:
    """A signed statement "``peer_id`` of ``network_id`` listens at ``addrs``", valid ``ttl`` s after ``seq``.

    ``seq`` is the signing time in milliseconds since the epoch, strictly increasing per peer (registries
    refuse an older record than the one they hold, so a captured record cannot be replayed over a newer
    one). Build with :meth:`create`, parse with :meth:`decode`; both verify everything, so every instance
    that exists is valid and signed. ``encoded`` is the exact byte string that was signed and travels.
    """

    network_id: str
    peer_id: str
    addrs: tuple[str, ...]
    seq: int
    ttl: int
    signature: bytes = field(repr=False)
    encoded: bytes = field(repr=False, compare=False)

    @classmethod
    def create(
        cls,
        identity: Identity,
        network_id: str,
        addrs: Iterable[str],
        *,
        ttl: int = DEFAULT_TTL,
        seq: int | None = None,
    ) -> PeerRecord:
        """Sign a record for ``identity``; addresses get ``/p2p/<peer id>`` appended and are deduplicated."""
        seq = int(time.time() * 1000) if seq is None else seq
        normalized = tuple(dict.fromkeys(normalize_addr(a, identity.peer_id) for a in addrs))
        body = _body_bytes(network_id, identity.peer_id, normalized, seq, ttl)
        signature = identity.sign(SIGNING_DOMAIN + body)
        encoded = _pack([RECORD_VERSION, body, signature])
        if len(encoded) > MAX_RECORD_BYTES:
            raise OversizeRecordError(f"record of {len(encoded)} bytes exceeds {MAX_RECORD_BYTES}")
        return cls(network_id, identity.peer_id, normalized, seq, ttl, signature, encoded)

    @classmethod
    def decode(cls, data: bytes, *, network_id: str | None = None, peer_id: str | None = None) -> PeerRecord:
        """Parse and verify a record; cheap checks first. Optionally require its network and its peer."""
        outer = _unpack(data, "record", max_len=MAX_RECORD_BYTES)
        if (
            not isinstance(outer, list)
            or len(outer) != 3
            or type(outer[0]) is not int
            or not isinstance(outer[1], bytes)
            or not isinstance(outer[2], bytes)
        ):
            raise RecordSchemaError("record must be a msgpack array [version, body bytes, signature bytes]")
        version, body, signature = outer
        if version != RECORD_VERSION:
            raise RecordSchemaError(f"record version {version} is not supported (expected {RECORD_VERSION})")
        if len(signature) != SIGNATURE_SIZE:
            raise RecordSchemaError(f"a signature has {SIGNATURE_SIZE} bytes, got {len(signature)}")
        fields = _unpack(body, "record body", max_len=MAX_RECORD_BYTES)
        if not isinstance(fields, dict):
            raise RecordSchemaError("record body must be a msgpack map")
        if set(fields) != set(_BODY_FIELDS):
            missing = sorted(set(_BODY_FIELDS) - set(fields))
            extra = sorted(map(str, set(fields) - set(_BODY_FIELDS)))
            raise RecordSchemaError(f"record body fields: missing {missing}, unknown {extra}")
        addrs, net, peer, seq, ttl = (fields[k] for k in _BODY_FIELDS)
        peer = _check_peer_id(peer, "record peer")
        if not isinstance(addrs, list):
            raise RecordSchemaError("record addrs must be an array of strings")
        if network_id is not None and net != network_id:
            raise NetworkMismatchError(f"record is for network {net!r}, expected {network_id!r}")
        if peer_id is not None and peer != peer_id:
            raise PeerMismatchError(f"record is for peer {peer}, expected {peer_id}")
        if _body_bytes(net, peer, tuple(addrs), seq, ttl) != body:
            raise NonCanonicalRecordError("record body is not in canonical form")
        if _pack(outer) != bytes(data):
            raise NonCanonicalRecordError("record is not in canonical form")
        if not verify(public_key_from_peer_id(peer), SIGNING_DOMAIN + body, signature):
            raise RecordSignatureError(f"record signature does not verify against peer {peer}")
        return cls(net, peer, tuple(addrs), seq, ttl, signature, bytes(data))

    @property
    def expires_at(self) -> float:
        """Wall-clock time (epoch seconds) after which the signer no longer vouches for the addresses."""
        return self.seq / 1000.0 + self.ttl


def _body_bytes(network_id: str, peer_id: str, addrs: tuple[str, ...], seq: int, ttl: int) -> bytes:
    """Validate the fields and return the canonical body (the signed bytes)."""
    if not isinstance(network_id, str) or not _NETWORK_ID_RE.fullmatch(network_id):
        raise RecordSchemaError(f"network id must be 1-64 characters of [A-Za-z0-9._-], got {network_id!r}")
    _check_peer_id(peer_id, "record peer")
    if not 1 <= len(addrs) <= MAX_ADDRS:
        raise RecordSchemaError(f"a record carries 1 to {MAX_ADDRS} addresses, got {len(addrs)}")
    for a in addrs:
        if normalize_addr(a, peer_id) != a:
            raise RecordSchemaError(f"record address {a!r} must end with /p2p/{peer_id}")
    if len(set(addrs)) != len(addrs):
        raise RecordSchemaError("record addresses must be distinct")
    if type(seq) is not int or not 1 <= seq <= _MAX_UINT64:
        raise RecordSchemaError(f"record seq must be an unsigned 64-bit integer >= 1, got {seq!r}")
    if type(ttl) is not int or not 1 <= ttl <= MAX_TTL:
        raise RecordSchemaError(f"record ttl must be an integer in 1..{MAX_TTL} s, got {ttl!r}")
    return _pack({"addrs": list(addrs), "net": network_id, "peer": peer_id, "seq": seq, "ttl": ttl})


# ---------------------------------------------------------------------------------------------- cache


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


# --------------------------------------------------------------------------------------------- client


class DiscoveryTransport(Protocol):
    """The part of :class:`p2pfl.transport.base.Transport` discovery needs (both transports satisfy it)."""

    @property
    def peer_id(self) -> str: ...

    @property
    def listen_addrs(self) -> list[str]: ...

    async def request(
        self, peer_id: str, protocol: str, data: bytes, *, max_response: int, timeout: float
    ) -> bytes: ...

    async def connect(self, addr: str) -> str: ...

    def connected_peers(self) -> list[str]: ...


def _advertisable(addrs: Iterable[str], peer_id: str) -> list[str]:
    out = []
    for a in addrs:
        try:
            out.append(normalize_addr(a, peer_id))
        except RecordError:
            continue  # e.g. 0.0.0.0 listeners: not dialable, not advertised
    return out


async def dial_record(transport: DiscoveryTransport, record: PeerRecord) -> str | None:
    """Dial the addresses of a verified record in order; return the peer id on the first success."""
    for addr in record.addrs:
        try:
            return await transport.connect(addr)
        except TransportError as exc:
            log.debug("event=dial_failed peer=%s addr=%s error=%s", record.peer_id, addr, exc)
    return None


def _log_unexpected(registry: str, op: str, exc: Exception) -> None:
    """A registry's answer raised something other than a DiscoveryError/TransportError: a bug of ours (every
    refusal has a reason). One line at ERROR with the registry and the exception type; the call fails only."""
    log.error(
        "event=registry_unexpected_error registry=%s op=%s error=%s: %s",
        registry,
        op,
        type(exc).__name__,
        exc,
    )
    log.debug("traceback of the unexpected registry error", exc_info=exc)


class BootstrapClient:
    """Registers this peer with bootstrap registries and discovers its network's peers through them.

    Several registry addresses may be given: registration goes to every registry that answers (they do not
    share state), discovery merges what every answering registry returns (newest record per peer), and each
    record is verified here, so a lying registry can hide peers but never redirect us. With a ``cache``,
    every verified record is remembered and :meth:`find_peers` falls back to it when no registry answers.
    """

    def __init__(
        self,
        transport: DiscoveryTransport,
        identity: Identity,
        network_id: str,
        registries: Sequence[str],
        *,
        ttl: int = DEFAULT_TTL,
        advertise: Sequence[str] | None = None,
        cache: PeerCache | None = None,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if identity.peer_id != transport.peer_id:
            raise DiscoveryError("the identity must be the transport's own (registries check the requester)")
        if not _NETWORK_ID_RE.fullmatch(network_id):
            raise DiscoveryError(f"network id must be 1-64 characters of [A-Za-z0-9._-], got {network_id!r}")
        if not 1 <= ttl <= MAX_TTL:
            raise DiscoveryError(f"ttl must be in 1..{MAX_TTL} s")
        self.transport = transport
        self.identity = identity
        self.network_id = network_id
        self.registries = list(dict.fromkeys(registries))
        self.ttl = ttl
        self.advertise = list(advertise) if advertise is not None else None
        self.cache = cache
        self.timeout = timeout
        self._clock = clock
        self._registry_ids: dict[str, str] = {}
        self._last_seq = 0
        #: ttl granted by each registry at the last successful registration (addr -> seconds).
        self.granted: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------ record
    def make_record(self) -> PeerRecord:
        """A freshly signed record of our current addresses (seq strictly above the previous one)."""
        addrs = self.advertise if self.advertise is not None else self.transport.listen_addrs
        usable = _advertisable(addrs, self.identity.peer_id)
        if not usable:
            raise DiscoveryError(f"no dialable address to advertise among {addrs!r}")
        self._last_seq = max(self._last_seq + 1, int(self._clock() * 1000))
        return PeerRecord.create(
            self.identity, self.network_id, usable[:MAX_ADDRS], ttl=self.ttl, seq=self._last_seq
        )

    @property
    def registry_peer_ids(self) -> frozenset[str]:
        """Peer ids of the registries dialled so far: connections that are not learning neighbours."""
        return frozenset(self._registry_ids.values())

    # --------------------------------------------------------------------------------------- requests
    async def _call(self, registry: str, fields: dict[str, Any]) -> dict[str, Any]:
        """One request to one registry: dial if needed, send, decode; error responses raise RegistryError."""
        with trio.fail_after(self.timeout):
            pid = self._registry_ids.get(registry)
            if pid is None or pid not in self.transport.connected_peers():
                pid = await self.transport.connect(registry)
                self._registry_ids[registry] = pid
            raw = await self.transport.request(
                pid,
                PROTOCOL_ID,
                encode_message(fields),
                max_response=MAX_RESPONSE_BYTES,
                timeout=self.timeout,
            )
        msg = decode_message(raw)
        if msg.get("ok") is True:
            return msg
        reason, detail = msg.get("error"), msg.get("detail", "")
        retry = msg.get("retry_after")
        raise RegistryError(
            reason if isinstance(reason, str) else "unknown",
            detail if isinstance(detail, str) else "",
            retry_after=float(retry) if isinstance(retry, int | float) and 0 <= retry <= 60 else None,
        )

    async def _call_logged(
        self, registry: str, fields: dict[str, Any], errors: dict[str, str] | None = None
    ) -> dict[str, Any] | None:
        """``_call`` that logs a failure (and notes it in ``errors[registry]``) and returns None."""
        try:
            return await self._call(registry, fields)
        except (TransportError, RecordError, RegistryError, trio.TooSlowError) as exc:
            log.info("event=registry_failed registry=%s op=%s error=%s", registry, fields.get("op"), exc)
            if errors is not None:
                errors[registry] = str(exc) or type(exc).__name__
            return None
        except Exception as exc:  # whatever a registry answers, the peer goes on (a bug of ours: one line)
            _log_unexpected(registry, str(fields.get("op")), exc)
            if errors is not None:
                errors[registry] = f"{type(exc).__name__}: {exc}"
            return None

    async def _each(self, fn: Callable[[str], Any]) -> dict[str, Any]:
        """Run ``await fn(addr)`` for every registry concurrently; map addr -> result (None = failed)."""
        results: dict[str, Any] = {}

        async def one(addr: str) -> None:
            results[addr] = await fn(addr)

        async with trio.open_nursery() as nursery:
            for addr in self.registries:
                nursery.start_soon(one, addr)
        return results

    async def register(self) -> int:
        """Sign a fresh record and register it with every registry; return how many accepted it.

        Raises :class:`RegistryUnavailableError` when none did; its message gives each registry's reason.
        """
        record = self.make_record()
        request = {"op": "register", "record": record.encoded}
        errors: dict[str, str] = {}

        async def one(addr: str) -> float | None:
            resp = await self._call_logged(addr, request, errors)
            ttl = resp.get("ttl") if resp is not None else None
            return float(ttl) if isinstance(ttl, int | float) and ttl > 0 else None

        results = await self._each(one)
        self.granted = {a: t for a, t in results.items() if t is not None}
        if not self.granted:
            why = "; ".join(f"{a}: {e}" for a, e in errors.items()) or "no registry configured"
            raise RegistryUnavailableError(f"no registry accepted our record ({why})")
        return len(self.granted)

    async def unregister(self) -> int:
        """Withdraw our registration from every registry we reach (e.g. on graceful shutdown)."""
        results = await self._each(
            lambda a: self._call_logged(a, {"op": "unregister", "net": self.network_id})
        )
        self.granted = {}
        return sum(r is not None for r in results.values())

    async def _discover_one(self, registry: str, max_records: int, page_size: int) -> list[PeerRecord] | None:
        records: list[PeerRecord] = []
        cursor: str | None = None
        waits = 3  # rate-limit retries per discovery: a registry cannot keep us waiting forever
        while len(records) < max_records:
            fields: dict[str, Any] = {
                "op": "discover",
                "net": self.network_id,
                "limit": min(page_size, max_records - len(records)),
            }
            if cursor is not None:
                fields["cursor"] = cursor
            try:
                resp = await self._call(registry, fields)
            except RegistryError as exc:
                if exc.reason == "rate_limited" and exc.retry_after is not None and waits > 0:
                    waits -= 1
                    await trio.sleep(exc.retry_after)
                    continue
                log.info("event=registry_failed registry=%s op=discover error=%s", registry, exc)
                return records or None
            except (TransportError, RecordError, trio.TooSlowError) as exc:
                log.info("event=registry_failed registry=%s op=discover error=%s", registry, exc)
                return records or None
            except Exception as exc:  # whatever a registry answers, the peer goes on (a bug of ours)
                _log_unexpected(registry, "discover", exc)
                return records or None
            page = resp.get("records")
            if not isinstance(page, list):
                log.info("event=registry_bad_response registry=%s", registry)
                return records or None
            for raw in page:
                try:
                    records.append(PeerRecord.decode(raw, network_id=self.network_id))
                except RecordError as exc:  # a lying or broken registry: skip the record, count it
                    log.warning(
                        "event=record_rejected registry=%s reason=%s error=%s", registry, exc.reason, exc
                    )
                except Exception as exc:  # a decoder that is not total: skip the record all the same
                    _log_unexpected(registry, "record", exc)
            nxt = resp.get("next")
            if not isinstance(nxt, str) or not page or nxt == cursor:
                break
            cursor = nxt
        return records

    async def discover(self, *, max_records: int = 1000, page_size: int = MAX_PAGE) -> list[PeerRecord]:
        """Verified records of our network's peers (not ours), merged over every registry that answers.

        Each registry is listed page by page (``page_size`` <= 100 records per request).
        Records are cached (and the cache saved) when a cache is set. Raises
        :class:`RegistryUnavailableError` when no registry answered.
        """
        if not 1 <= page_size <= MAX_PAGE:
            raise DiscoveryError(f"page_size must be in 1..{MAX_PAGE}")
        results = await self._each(lambda a: self._discover_one(a, max_records + 1, page_size))  # +1: us
        answered = [r for r in results.values() if r is not None]
        if not answered:
            raise RegistryUnavailableError(f"no registry answered discovery (tried {len(self.registries)})")
        best: dict[str, PeerRecord] = {}
        for page in answered:
            for rec in page:
                if rec.peer_id == self.identity.peer_id:
                    continue
                old = best.get(rec.peer_id)
                if old is None or rec.seq > old.seq:
                    best[rec.peer_id] = rec
        found = sorted(best.values(), key=lambda r: -r.seq)[:max_records]
        if self.cache is not None and found:
            now = self._clock()
            for rec in found:
                self.cache.add(rec, seen=now)
            self._save_cache()
        return found

    async def find_peers(self, *, max_records: int = 1000) -> list[PeerRecord]:
        """Peers to dial: what the registries return first, then cached peers they did not mention.

        Never raises for unavailable registries: with every registry down this is the cache alone, which is
        how a restarted peer rejoins its network.
        """
        try:
            found = await self.discover(max_records=max_records)
        except RegistryUnavailableError:
            log.info("event=registries_down network=%s using=cache", self.network_id)
            found = []
        if self.cache is not None:
            seen = {r.peer_id for r in found}
            found += [r for r in self.cache.records() if r.peer_id not in seen]
        return found[:max_records]

    async def status(self, registry: str) -> dict[str, Any]:
        """The status map of one registry (raises on failure)."""
        return await self._call(registry, {"op": "status"})

    def renew_interval(self) -> float:
        """Seconds until the next renewal: a third of the shortest granted ttl (1 s at least)."""
        ttl = min(self.granted.values(), default=float(self.ttl))
        return max(1.0, ttl / 3.0)

    async def run_renewal(
        self, *, retry: float = 5.0, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Register now, then keep the registration alive until cancelled (failures are retried, not raised).

        ``task_status.started()`` is called after the first attempt, whether it reached a registry or not,
        so ``await nursery.start(client.run_renewal)`` never blocks a peer whose registries are all down.
        """
        started = False
        while True:
            try:
                await self.register()
                delay = self.renew_interval()
            except DiscoveryError as exc:  # none answered, or no address to advertise yet
                log.info("event=registration_failed network=%s error=%s", self.network_id, exc)
                delay = min(retry, self.renew_interval())
            if not started:
                started = True
                task_status.started()
            await trio.sleep(delay)

    def _save_cache(self) -> None:
        if self.cache is None:
            return
        try:
            self.cache.save()
        except OSError as exc:
            log.warning("event=peer_cache_save_failed path=%s error=%s", self.cache.path, exc)
