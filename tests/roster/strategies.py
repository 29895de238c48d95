"""Hypothesis strategies and small builders for rosters and certificates."""

from __future__ import annotations

from hypothesis import strategies as st

from p2pfl.identity import Identity
from p2pfl.roster import Certificate, Member, Org, Roster, certify, sign
from p2pfl.roster.model import MAX_INT, PPM

OPERATOR = Identity(bytes([200]) * 32)
ORG_A = Identity(bytes([201]) * 32)
ORG_B = Identity(bytes([202]) * 32)
NOW = 1_800_000_000_000  # unix ms
DAY = 86_400_000


def pid(i: int) -> str:
    return Identity(bytes([i % 256]) * 31 + bytes([i // 256])).peer_id


names = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True)
roles = st.lists(st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True), max_size=3).map(
    lambda r: tuple(sorted(set(r)))
)
peer_ids = st.integers(0, 5000).map(pid)
keys = st.binary(min_size=32, max_size=32)
ints = st.integers(0, MAX_INT)


@st.composite
def rosters(draw: st.DrawFn, signed: bool | None = None) -> Roster:
    org_list = draw(
        st.lists(
            st.builds(Org, names, keys, st.integers(1, PPM), st.integers(8, 100)),
            max_size=4,
            unique_by=lambda o: o.name,
        )
    )
    orgs = tuple(sorted(org_list, key=lambda o: o.name))
    ids = draw(st.lists(peer_ids, max_size=8, unique=True))
    members: list[Member] = []
    revoked: list[str] = []
    for p in ids:
        if orgs and draw(st.booleans()):
            members.append(Member(p, draw(st.sampled_from(orgs)).name, draw(roles)))
        else:
            revoked.append(p)
    roster = Roster(
        network_id=draw(names),
        operator=OPERATOR.public_key,
        version=draw(ints),
        expires_ms=draw(ints),
        orgs=orgs,
        members=tuple(sorted(members, key=lambda m: m.peer_id)),
        revoked=tuple(sorted(revoked)),
    )
    if signed if signed is not None else draw(st.booleans()):
        roster = sign(roster, OPERATOR, version=roster.version, expires_ms=roster.expires_ms)
    return roster


@st.composite
def certificates(draw: st.DrawFn) -> Certificate:
    cert = Certificate(draw(names), draw(names), draw(peer_ids), draw(roles), draw(ints))
    return certify(cert, ORG_A) if draw(st.booleans()) else cert


def closed_roster(
    members: dict[str, str],
    *,
    version: int = 1,
    expires_ms: int = NOW + DAY,
    network_id: str = "net",
    max_nodes: int = 100,
    max_share: int = PPM,
    revoked: tuple[str, ...] = (),
    operator: Identity = OPERATOR,
) -> Roster:
    """A signed roster with orgs ``a`` (key ORG_A) and ``b`` (key ORG_B) and ``members`` (peer id -> org)."""
    roster = Roster(
        network_id=network_id,
        operator=operator.public_key,
        orgs=(Org("a", ORG_A.public_key, max_share, max_nodes), Org("b", ORG_B.public_key, PPM, max_nodes)),
        members=tuple(Member(p, o) for p, o in sorted(members.items())),
        revoked=tuple(sorted(revoked)),
    )
    return sign(roster, operator, version=version, expires_ms=expires_ms)


def cert_for(
    peer_id: str, org: str = "a", *, key: Identity = ORG_A, expires_ms: int = NOW + DAY
) -> Certificate:
    return certify(Certificate("net", org, peer_id, (), expires_ms), key)
