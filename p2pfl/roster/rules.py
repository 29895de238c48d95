"""Signing and checking rosters and certificates, and the adoption rule (pure: ``now`` is passed in, in unix
milliseconds, so tests drive time)."""

from __future__ import annotations

import dataclasses

from p2pfl.identity import Identity
from p2pfl.identity import verify as verify_signature
from p2pfl.roster.codec import cert_body, roster_body
from p2pfl.roster.errors import RosterError
from p2pfl.roster.model import Certificate, Org, Roster


def sign(roster: Roster, operator: Identity, *, version: int, expires_ms: int) -> Roster:
    """``roster`` at ``version``, expiring at ``expires_ms``, signed by ``operator`` (whose key it names)."""
    if operator.public_key != roster.operator:
        raise RosterError("wrong_operator", "this key is not the roster's operator key")
    unsigned = dataclasses.replace(roster, version=version, expires_ms=expires_ms, signature=b"")
    return dataclasses.replace(unsigned, signature=operator.sign(roster_body(unsigned)))


def certify(cert: Certificate, org_key: Identity) -> Certificate:
    unsigned = dataclasses.replace(cert, signature=b"")
    return dataclasses.replace(unsigned, signature=org_key.sign(cert_body(unsigned)))


def verify(
    roster: Roster,
    *,
    network_id: str | None,
    now_ms: int | None,
    operator: bytes | None = None,
) -> Roster:
    """``roster`` if its operator signed it (and, when given, it names ``operator`` and ``network_id`` and
    has not expired at ``now_ms``); else a :class:`RosterError`: ``unsigned``, ``bad_signature``,
    ``wrong_operator``, ``wrong_network`` or ``expired``."""
    if not roster.signature:
        raise RosterError("unsigned", "the roster is not signed (run `p2pfl roster sign`)")
    if operator is not None and roster.operator != operator:
        raise RosterError("wrong_operator", "the roster is signed by another operator key")
    if network_id is not None and roster.network_id != network_id:
        raise RosterError(
            "wrong_network", f"the roster is for network {roster.network_id!r}, not {network_id!r}"
        )
    if not verify_signature(roster.operator, roster_body(roster), roster.signature):
        raise RosterError("bad_signature", "the roster's signature does not verify with its operator key")
    if now_ms is not None and roster.expired(now_ms):
        raise RosterError(
            "expired", f"the roster (version {roster.version}) expired at {roster.expires_ms} ms"
        )
    return roster


def why_not_newer(current: Roster, candidate: Roster, now_ms: int) -> str | None:
    """None if a peer holding ``current`` should adopt ``candidate``: the same operator key signed it for
    the same network with a higher version, and it has not expired. Else the reason slug."""
    if candidate.operator != current.operator:
        return "wrong_operator"
    if candidate.network_id != current.network_id:
        return "wrong_network"
    if candidate.version <= current.version:
        return "stale_version"
    try:
        verify(candidate, network_id=current.network_id, now_ms=now_ms, operator=current.operator)
    except RosterError as exc:
        return exc.reason
    return None


def newer(current: Roster, candidate: Roster, now_ms: int) -> bool:
    """The adoption rule: see :func:`why_not_newer`."""
    return why_not_newer(current, candidate, now_ms) is None


def verify_certificate(cert: Certificate, roster: Roster, now_ms: int) -> Org:
    """The org under which ``roster`` admits ``cert``'s peer, or a :class:`RosterError`: ``wrong_network``,
    ``unknown_org``, ``revoked``, ``bad_signature``, ``cert_expired``."""
    if cert.network_id != roster.network_id:
        raise RosterError("wrong_network", f"the certificate is for network {cert.network_id!r}")
    org = roster.org(cert.org)
    if org is None:
        raise RosterError("unknown_org", f"the roster lists no org {cert.org!r}")
    if roster.is_revoked(cert.peer_id):
        raise RosterError("revoked", f"peer {cert.peer_id} is revoked")
    if not cert.signature or not verify_signature(org.public_key, cert_body(cert), cert.signature):
        raise RosterError("bad_signature", f"the certificate is not signed by org {cert.org}'s key")
    if now_ms >= cert.expires_ms:
        raise RosterError(
            "cert_expired", f"the certificate of {cert.peer_id} expired at {cert.expires_ms} ms"
        )
    return org
