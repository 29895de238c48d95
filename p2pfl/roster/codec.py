"""Canonical msgpack forms of rosters, certificates and the roster exchange, and their total decoders.

Each value has exactly one accepted encoding: the decoder rebuilds the value (validating it) and refuses the
input unless re-encoding gives back the same bytes (reason ``non_canonical``), so a signature covers one
byte string and two peers never disagree on what a roster says. Decoders are total: whatever the bytes, a
value or a :class:`~p2pfl.roster.errors.RosterError` with a reason slug (``oversize``, ``truncated``,
``trailing_bytes``, ``malformed``, ``wrong_type``, ``bad_magic``, ``invalid``, ``non_canonical``).

Roster: ``[b"p2pfl/roster", 1, network_id, version, expires_ms, operator_key, orgs, members, revoked,
signature]`` with ``orgs = [[name, public_key, max_share_ppm, max_nodes], ...]`` sorted by name,
``members = [[peer_id, org, [role, ...]], ...]`` sorted by peer id, ``revoked = [peer_id, ...]`` sorted.
The operator signs the encoding of the first nine elements (the magic string separates the domain).
Certificate: ``["p2pfl/cert", 1, network_id, org, peer_id, [role, ...], expires_ms, signature]``, signed
by the org's key over the first seven.
"""

from __future__ import annotations

from typing import Any

from p2pfl.roster.errors import RosterError
from p2pfl.roster.model import (
    CERT_MAGIC,
    FORMAT,
    MAX_MEMBERS,
    MAX_REVOKED,
    ROSTER_MAGIC,
    Certificate,
    Member,
    Org,
    Roster,
)
from p2pfl.wire.canonical import _pack, _unpack
from p2pfl.wire.errors import WireError

#: the largest roster file or message accepted (10,000 members and 10,000 revocations fit)
MAX_ROSTER_BYTES = 2 * 1024 * 1024
MAX_CERT_BYTES = 1024
#: certificates one exchange response carries at most
MAX_EXCHANGE_CERTS = 256
EXCHANGE_REQUEST = "p2pfl/roster-req"
EXCHANGE_RESPONSE = "p2pfl/roster-resp"
MAX_EXCHANGE_BYTES = MAX_ROSTER_BYTES + MAX_EXCHANGE_CERTS * (MAX_CERT_BYTES + 8) + 64
_MAX_ARRAY = max(MAX_MEMBERS, MAX_REVOKED)


# ---------------------------------------------------------------------------------------- encoders


def _roster_fields(r: Roster) -> list[Any]:
    return [
        ROSTER_MAGIC,
        FORMAT,
        r.network_id,
        r.version,
        r.expires_ms,
        r.operator,
        [[o.name, o.public_key, o.max_share_ppm, o.max_nodes] for o in r.orgs],
        [[m.peer_id, m.org, list(m.roles)] for m in r.members],
        list(r.revoked),
    ]


def roster_body(r: Roster) -> bytes:
    """The bytes the operator signs: the roster without its signature."""
    return _pack(_roster_fields(r))


def encode_roster(r: Roster) -> bytes:
    return _pack([*_roster_fields(r), r.signature])


def _cert_fields(c: Certificate) -> list[Any]:
    return [CERT_MAGIC, FORMAT, c.network_id, c.org, c.peer_id, list(c.roles), c.expires_ms]


def cert_body(c: Certificate) -> bytes:
    """The bytes the org signs: the certificate without its signature."""
    return _pack(_cert_fields(c))


def encode_cert(c: Certificate) -> bytes:
    return _pack([*_cert_fields(c), c.signature])


def encode_request(version: int) -> bytes:
    """Ask a neighbour for its roster (``version``: the one we hold, so it can skip sending an older one)."""
    return _pack([EXCHANGE_REQUEST, FORMAT, version])


def encode_response(roster: bytes | None, certs: list[bytes]) -> bytes:
    return _pack([EXCHANGE_RESPONSE, FORMAT, roster, certs[:MAX_EXCHANGE_CERTS]])


# ---------------------------------------------------------------------------------------- decoders


def _load(data: object, what: str, limit: int) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RosterError("wrong_type", f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > limit:
        raise RosterError("oversize", f"{what}: {len(data)} bytes, above the limit of {limit}")
    try:
        return _unpack(
            bytes(data),
            what,
            max_str_len=1024,
            max_bin_len=limit,
            max_array_len=_MAX_ARRAY,
            max_map_len=16,  # no map is valid: a small one is refused by its type, a big one here
            max_ext_len=0,
        )
    except WireError as exc:
        raise RosterError(exc.reason, str(exc)) from None


def _expect(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise RosterError("wrong_type", f"{what}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _array(value: Any, n: int | None, what: str) -> list[Any]:
    _expect(value, list, what)
    if n is not None and len(value) != n:
        raise RosterError("malformed", f"{what}: expected {n} elements, got {len(value)}")
    return value  # type: ignore[no-any-return]


def _head(obj: Any, magic: str, n: int, what: str) -> list[Any]:
    items = _array(obj, None, what)
    if not items or items[0] != magic:
        raise RosterError("bad_magic", f"{what}: not a {magic} value")
    if len(items) < 2 or items[1] != FORMAT or isinstance(items[1], bool):
        raise RosterError("malformed", f"{what}: unknown format (this peer reads format {FORMAT})")
    return _array(items, n, what)


def _roles(value: Any, what: str) -> tuple[str, ...]:
    return tuple(_expect(r, str, what) for r in _array(value, None, what))


def _canonical(data: bytes | bytearray | memoryview, again: bytes, what: str) -> None:
    if bytes(data) != again:
        raise RosterError("non_canonical", f"{what}: not in its one canonical encoding")


def decode_roster(data: bytes | bytearray | memoryview, *, limit: int = MAX_ROSTER_BYTES) -> Roster:
    """The roster ``data`` encodes (not yet verified: see :func:`p2pfl.roster.rules.verify`)."""
    what = "roster"
    f = _head(_load(data, what, limit), ROSTER_MAGIC, 10, what)
    orgs = []
    for item in _array(f[6], None, "roster orgs"):
        name, key, ppm, nodes = _array(item, 4, "roster org")
        orgs.append(
            Org(
                _expect(name, str, "org name"),
                _expect(key, bytes, "org key"),
                _expect(ppm, int, "org max_share_ppm"),
                _expect(nodes, int, "org max_nodes"),
            )
        )
    members = []
    for item in _array(f[7], None, "roster members"):
        pid, org, roles = _array(item, 3, "roster member")
        members.append(
            Member(
                _expect(pid, str, "member peer id"), _expect(org, str, "member org"), _roles(roles, "roles")
            )
        )
    revoked = tuple(_expect(p, str, "revoked peer id") for p in _array(f[8], None, "roster revoked"))
    roster = Roster(
        network_id=_expect(f[2], str, "network id"),
        version=_expect(f[3], int, "version"),
        expires_ms=_expect(f[4], int, "expires_ms"),
        operator=_expect(f[5], bytes, "operator key"),
        orgs=tuple(orgs),
        members=tuple(members),
        revoked=revoked,
        signature=_expect(f[9], bytes, "signature"),
    )
    _canonical(data, encode_roster(roster), what)
    return roster


def peek_roster(data: bytes | bytearray | memoryview) -> tuple[str, int, bytes, bytes, bytes]:
    """``(network_id, version, operator, body, signature)`` of roster bytes, without building the roster:
    a peer refuses a stale, foreign or badly signed roster from this before paying for the full decode
    (about a second for 10,000 members, most of it checking each peer id)."""
    f = _head(_load(data, "roster", MAX_ROSTER_BYTES), ROSTER_MAGIC, 10, "roster")
    return (
        _expect(f[2], str, "network id"),
        _expect(f[3], int, "version"),
        _expect(f[5], bytes, "operator key"),
        _pack(f[:9]),
        _expect(f[9], bytes, "signature"),
    )


def decode_cert(data: bytes | bytearray | memoryview) -> Certificate:
    """The certificate ``data`` encodes (unverified: see :func:`p2pfl.roster.rules.verify_certificate`)."""
    what = "certificate"
    f = _head(_load(data, what, MAX_CERT_BYTES), CERT_MAGIC, 8, what)
    cert = Certificate(
        network_id=_expect(f[2], str, "network id"),
        org=_expect(f[3], str, "org"),
        peer_id=_expect(f[4], str, "peer id"),
        roles=_roles(f[5], "roles"),
        expires_ms=_expect(f[6], int, "expires_ms"),
        signature=_expect(f[7], bytes, "signature"),
    )
    _canonical(data, encode_cert(cert), what)
    return cert


def decode_request(data: bytes | bytearray | memoryview) -> int:
    """The roster version the requester holds."""
    what = "roster request"
    f = _head(_load(data, what, 64), EXCHANGE_REQUEST, 3, what)
    version = _expect(f[2], int, "version")
    if version < 0:
        raise RosterError("invalid", f"{what}: negative version")
    _canonical(data, encode_request(version), what)
    return version  # type: ignore[no-any-return]


def decode_response(data: bytes | bytearray | memoryview) -> tuple[bytes | None, list[bytes]]:
    """A neighbour's roster bytes (None: not newer than ours) and the certificate bytes it knows; each is
    decoded on its own afterwards (one bad certificate does not spoil the others)."""
    what = "roster response"
    f = _head(_load(data, what, MAX_EXCHANGE_BYTES), EXCHANGE_RESPONSE, 4, what)
    roster = None if f[2] is None else _expect(f[2], bytes, "roster")
    certs = [_expect(c, bytes, "certificate") for c in _array(f[3], None, "certificates")]
    if len(certs) > MAX_EXCHANGE_CERTS:
        raise RosterError("oversize", f"{what}: {len(certs)} certificates, above {MAX_EXCHANGE_CERTS}")
    _canonical(data, encode_response(roster, certs), what)
    return roster, certs
