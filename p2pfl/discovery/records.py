"""Signed peer records and the dialable addresses they carry (pure: no I/O; ``create`` reads the clock)."""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from p2pfl.discovery.codec import (
    DEFAULT_TTL,
    MAX_ADDR_LEN,
    MAX_ADDRS,
    MAX_RECORD_BYTES,
    MAX_TTL,
    RECORD_VERSION,
    SIGNING_DOMAIN,
    _pack,
    _unpack,
)
from p2pfl.discovery.errors import (
    NetworkMismatchError,
    NonCanonicalRecordError,
    OversizeRecordError,
    PeerMismatchError,
    RecordSchemaError,
    RecordSignatureError,
)
from p2pfl.errors import IdentityError
from p2pfl.identity import SIGNATURE_SIZE, Identity, public_key_from_peer_id, verify

_NETWORK_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DNS_RE: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_PORT_RE: Final = re.compile(r"[1-9][0-9]{0,4}")
_MAX_UINT64: Final = (1 << 64) - 1
_BODY_FIELDS: Final = ("addrs", "net", "peer", "seq", "ttl")
_MEMORY_PREFIX: Final = "memory/"


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
