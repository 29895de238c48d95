"""The roster of a closed network, member certificates, and the rules that check them (pure: no I/O).

A roster is one signed value: the network's operator lists the organisations (each with its own Ed25519
key and a policy) and the members (peer IDs) allowed in, plus the peer IDs it has revoked. Its version only
grows: a peer adopts a roster only if the same operator key signed it for the same network with a higher
version (:func:`why_not_newer`), so an old, more permissive roster cannot be replayed. An organisation may
also admit members the roster does not list, with a :class:`Certificate` signed by the organisation's key;
the roster bounds how many nodes an organisation has (``max_nodes``) and what share of any peer's mix its
nodes may hold together (``max_share``).

Values validate on construction (a :class:`~p2pfl.roster.errors.RosterError` with reason ``invalid``);
signatures and expiry are checked in :mod:`p2pfl.roster.rules`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from p2pfl.errors import IdentityError
from p2pfl.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, public_key_from_peer_id
from p2pfl.roster.errors import RosterError

ROSTER_MAGIC = "p2pfl/roster"
CERT_MAGIC = "p2pfl/cert"
FORMAT = 1
#: shares are kept as integer parts per million on the wire: one exact form, no float NaN/rounding traps
PPM = 1_000_000
MAX_ORGS = 1024
MAX_MEMBERS = 10_000
MAX_REVOKED = 10_000
MAX_ROLES = 8
MAX_INT = (1 << 63) - 1
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ROLE = re.compile(r"[a-z0-9_-]{1,32}")


def _invalid(message: str) -> RosterError:
    return RosterError("invalid", message)


def _check_int(value: object, what: str, low: int, high: int = MAX_INT) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _invalid(f"{what} must be an integer in {low}..{high}, got {value!r}")


def check_network_id(value: object) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _invalid(f"network id must be 1-64 characters of [A-Za-z0-9._-], got {value!r}")


def check_peer_id(value: object) -> None:
    if not isinstance(value, str):
        raise _invalid(f"a peer id is a string, got {type(value).__name__}")
    try:
        public_key_from_peer_id(value)
    except IdentityError as exc:
        raise _invalid(str(exc)) from None


def _check_roles(roles: object) -> None:
    if not isinstance(roles, tuple) or len(roles) > MAX_ROLES:
        raise _invalid(f"roles are a tuple of at most {MAX_ROLES} names, got {roles!r}")
    for role in roles:
        if not isinstance(role, str) or not _ROLE.fullmatch(role):
            raise _invalid(f"a role is 1-32 characters of [a-z0-9_-], got {role!r}")
    if list(roles) != sorted(set(roles)):
        raise _invalid(f"roles must be sorted and unique, got {roles!r}")


def roles_of(roles: Iterable[str]) -> tuple[str, ...]:
    """The one accepted form of a set of roles: sorted, unique."""
    return tuple(sorted(set(roles)))


@dataclass(frozen=True)
class Org:
    """An organisation: its key certifies members; its policy bounds its nodes and their share of a mix."""

    name: str
    public_key: bytes
    #: the most the org's nodes together may weigh in any peer's mix, in parts per million (1..PPM)
    max_share_ppm: int = PPM
    #: the most nodes the org may have in the network (listed members and certified ones together)
    max_nodes: int = MAX_MEMBERS

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise _invalid(f"an org name is 1-64 characters of [A-Za-z0-9._-], got {self.name!r}")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != PUBLIC_KEY_SIZE:
            raise _invalid(f"org {self.name}: public key must be {PUBLIC_KEY_SIZE} bytes")
        _check_int(self.max_share_ppm, f"org {self.name}: max_share_ppm", 1, PPM)
        _check_int(self.max_nodes, f"org {self.name}: max_nodes", 1, MAX_MEMBERS)

    @property
    def max_share(self) -> float:
        return self.max_share_ppm / PPM


@dataclass(frozen=True)
class Member:
    peer_id: str
    org: str
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_peer_id(self.peer_id)
        if not isinstance(self.org, str) or not _NAME.fullmatch(self.org):
            raise _invalid(f"member {self.peer_id}: org name {self.org!r} is not valid")
        _check_roles(self.roles)


@dataclass(frozen=True)
class Roster:
    """A network's membership, as signed by its operator (``signature`` is empty while it is being edited)."""

    network_id: str
    operator: bytes
    version: int = 0
    expires_ms: int = 0
    orgs: tuple[Org, ...] = ()
    members: tuple[Member, ...] = ()
    revoked: tuple[str, ...] = ()
    signature: bytes = field(default=b"", repr=False)
    _orgs: dict[str, Org] = field(init=False, repr=False, compare=False)
    _members: dict[str, Member] = field(init=False, repr=False, compare=False)
    _revoked: frozenset[str] = field(init=False, repr=False, compare=False)
    _listed: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_network_id(self.network_id)
        if not isinstance(self.operator, bytes) or len(self.operator) != PUBLIC_KEY_SIZE:
            raise _invalid(f"operator key must be {PUBLIC_KEY_SIZE} bytes")
        _check_int(self.version, "version", 0)
        _check_int(self.expires_ms, "expires_ms", 0)
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, SIGNATURE_SIZE):
            raise _invalid(f"a signature is empty or {SIGNATURE_SIZE} bytes")
        for name, items, kind, most in (
            ("orgs", self.orgs, Org, MAX_ORGS),
            ("members", self.members, Member, MAX_MEMBERS),
            ("revoked", self.revoked, str, MAX_REVOKED),
        ):
            if not isinstance(items, tuple) or len(items) > most:
                raise _invalid(f"{name} must be a tuple of at most {most}")
            if not all(isinstance(x, kind) for x in items):
                raise _invalid(f"{name} must hold {kind.__name__} values")
        names = [o.name for o in self.orgs]
        if names != sorted(set(names)):
            raise _invalid("orgs must be sorted by name, each name once")
        ids = [m.peer_id for m in self.members]
        if ids != sorted(set(ids)):
            raise _invalid("members must be sorted by peer id, each peer once")
        for pid in self.revoked:
            check_peer_id(pid)
        if list(self.revoked) != sorted(set(self.revoked)):
            raise _invalid("revoked peer ids must be sorted, each once")
        orgs = {o.name: o for o in self.orgs}
        counts: dict[str, int] = {}
        revoked = set(self.revoked)
        for m in self.members:
            if m.org not in orgs:
                raise _invalid(f"member {m.peer_id} names org {m.org!r}, which the roster does not list")
            if m.peer_id in revoked:
                raise _invalid(f"member {m.peer_id} is also revoked")
            counts[m.org] = counts.get(m.org, 0) + 1
        for name, n in counts.items():
            if n > orgs[name].max_nodes:
                raise _invalid(f"org {name} lists {n} members, above its max_nodes {orgs[name].max_nodes}")
        object.__setattr__(self, "_orgs", orgs)
        object.__setattr__(self, "_members", {m.peer_id: m for m in self.members})
        object.__setattr__(self, "_revoked", frozenset(self.revoked))
        object.__setattr__(self, "_listed", counts)

    # ------------------------------------------------------------------------------------ queries
    def org(self, name: str) -> Org | None:
        return self._orgs.get(name)

    def member(self, peer_id: str) -> Member | None:
        return self._members.get(peer_id)

    def is_revoked(self, peer_id: str) -> bool:
        return peer_id in self._revoked

    def listed_nodes(self, org: str) -> int:
        return self._listed.get(org, 0)

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_ms

    # ------------------------------------------------------------------------------------ edits
    # Every edit returns an unsigned roster: the operator signs the result with :func:`sign`.

    def _edited(self, **changes: object) -> Roster:
        return dataclasses.replace(self, signature=b"", **changes)  # type: ignore[arg-type]

    def with_org(self, org: Org) -> Roster:
        """Add ``org``, or replace the org of the same name (its key or policy)."""
        orgs = {o.name: o for o in self.orgs}
        orgs[org.name] = org
        return self._edited(orgs=tuple(orgs[n] for n in sorted(orgs)))

    def with_member(self, member: Member) -> Roster:
        """Add ``member`` (or change its org/roles); a revoked peer is un-revoked by being added again."""
        members = {m.peer_id: m for m in self.members}
        members[member.peer_id] = member
        revoked = tuple(p for p in self.revoked if p != member.peer_id)
        return self._edited(members=tuple(members[p] for p in sorted(members)), revoked=revoked)

    def revoke_member(self, peer_id: str) -> Roster:
        """Remove ``peer_id`` from the members and list it as revoked (so no org certificate admits it)."""
        check_peer_id(peer_id)
        members = tuple(m for m in self.members if m.peer_id != peer_id)
        return self._edited(members=members, revoked=tuple(sorted({*self.revoked, peer_id})))

    def revoke_org(self, name: str) -> Roster:
        """Remove org ``name`` and its listed members (revoked too); its certificates admit no one."""
        if name not in self._orgs:
            raise RosterError("unknown_org", f"the roster lists no org {name!r}")
        gone = {m.peer_id for m in self.members if m.org == name}
        return self._edited(
            orgs=tuple(o for o in self.orgs if o.name != name),
            members=tuple(m for m in self.members if m.org != name),
            revoked=tuple(sorted({*self.revoked, *gone})),
        )


@dataclass(frozen=True)
class Certificate:
    """``org`` vouches that ``peer_id`` is one of its nodes in ``network_id`` until ``expires_ms``."""

    network_id: str
    org: str
    peer_id: str
    roles: tuple[str, ...] = ()
    expires_ms: int = 0
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        check_network_id(self.network_id)
        if not isinstance(self.org, str) or not _NAME.fullmatch(self.org):
            raise _invalid(f"certificate org name {self.org!r} is not valid")
        check_peer_id(self.peer_id)
        _check_roles(self.roles)
        _check_int(self.expires_ms, "certificate expires_ms", 0)
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, SIGNATURE_SIZE):
            raise _invalid(f"a signature is empty or {SIGNATURE_SIZE} bytes")
