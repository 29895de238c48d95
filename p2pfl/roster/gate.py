"""Admission by roster: who may connect and announce, and the count of every refusal (pure: ``now`` in unix
milliseconds is passed in).

A :class:`Gate` holds the verified roster a peer enforces and the member certificates it has verified
under it. :meth:`Gate.check` answers "may this peer id talk to us?" for the transport's connection filter
and the engine's sender check alike, and counts each refusal by reason:

``roster_expired``  the roster this peer holds has expired: everyone is refused until a newer one arrives
``revoked``         the roster lists the peer id as revoked
``not_member``      neither listed nor holding a valid certificate of a listed org
``cert_expired``    its org certificate has expired
``org_full``        its org certificate is valid, but the org already has ``max_nodes`` nodes here
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from p2pfl.roster.errors import RosterError
from p2pfl.roster.model import Certificate, Roster
from p2pfl.roster.rules import verify, verify_certificate, why_not_newer

#: certificates a gate keeps at most (one per peer id): bounds the memory a flood of valid-looking
#: certificates can take; certificates of admitted peers are never dropped for it
MAX_CERTS = 4096


@dataclass(frozen=True)
class Adoption:
    """The outcome of offering a roster: ``reason`` is None when it was adopted."""

    reason: str | None
    version: int


class Gate:
    """The roster a peer enforces, the certificates it knows, and its refusal counters."""

    def __init__(self, roster: Roster, *, network_id: str) -> None:
        verify(roster, network_id=network_id, now_ms=None)  # expiry is checked per admission
        self.roster = roster
        self.refused: Counter[str] = Counter()
        #: rosters offered but not adopted, by reason (stale_version, bad_signature, ...)
        self.rosters_refused: Counter[str] = Counter()
        self.certs_refused: Counter[str] = Counter()
        self._certs: dict[str, Certificate] = {}
        #: peers admitted by certificate, per org, in the order they were first admitted (max_nodes)
        self._by_cert: dict[str, list[str]] = {}

    # ------------------------------------------------------------------------------------ admission
    def reason(self, peer_id: str, now_ms: int) -> str | None:
        """Why ``peer_id`` is refused now (None: admitted). Pure query: counts nothing, admits no one new."""
        return self._decide(peer_id, now_ms, admit=False)

    def check(self, peer_id: str, now_ms: int) -> bool:
        """Admit ``peer_id`` or count the refusal by its reason."""
        why = self._decide(peer_id, now_ms, admit=True)
        if why is not None:
            self.refused[why] += 1
        return why is None

    def _decide(self, peer_id: str, now_ms: int, *, admit: bool) -> str | None:
        roster = self.roster
        if roster.expired(now_ms):
            return "roster_expired"
        if roster.is_revoked(peer_id):
            return "revoked"
        if roster.member(peer_id) is not None:
            return None
        cert = self._certs.get(peer_id)
        if cert is None:
            return "not_member"
        if now_ms >= cert.expires_ms:
            return "cert_expired"
        admitted = self._by_cert.setdefault(cert.org, [])
        if peer_id in admitted:
            return None
        org = roster.org(cert.org)
        if org is None:  # pruned on adoption; kept as a guard
            return "not_member"
        if roster.listed_nodes(cert.org) + len(admitted) >= org.max_nodes:
            return "org_full"
        if admit:
            admitted.append(peer_id)
        return None

    # --------------------------------------------------------------------------------- certificates
    def add_certificate(self, cert: Certificate, now_ms: int) -> str | None:
        """Keep ``cert`` if it verifies under the roster (None), else the reason it was refused (counted)."""
        try:
            verify_certificate(cert, self.roster, now_ms)
        except RosterError as exc:
            self.certs_refused[exc.reason] += 1
            return exc.reason
        held = self._certs.get(cert.peer_id)
        if held is not None and held.org != cert.org and self._admitted_by_cert(cert.peer_id):
            self.certs_refused["org_conflict"] += 1  # an admitted peer keeps the org it was admitted under
            return "org_conflict"
        if held is None and len(self._certs) >= MAX_CERTS:
            self.certs_refused["cert_store_full"] += 1
            return "cert_store_full"
        if held is None or cert.expires_ms >= held.expires_ms:
            self._certs[cert.peer_id] = cert
        return None

    def certificates(self) -> list[Certificate]:
        """The certificates held, admitted peers first (what neighbours are told; the caller bounds it)."""
        admitted = {p for peers in self._by_cert.values() for p in peers}
        return sorted(self._certs.values(), key=lambda c: (c.peer_id not in admitted, c.peer_id))

    def _admitted_by_cert(self, peer_id: str) -> bool:
        return any(peer_id in peers for peers in self._by_cert.values())

    # ------------------------------------------------------------------------------------ adoption
    def offer(self, candidate: Roster, now_ms: int) -> Adoption:
        """Adopt ``candidate`` if it is newer (see :func:`~p2pfl.roster.rules.why_not_newer`); certificates
        and cert admissions that the new roster no longer supports are dropped."""
        why = why_not_newer(self.roster, candidate, now_ms)
        if why is not None:
            if why != "stale_version":  # an equal or older roster is the normal case, not an attack
                self.rosters_refused[why] += 1
            return Adoption(why, self.roster.version)
        self.roster = candidate
        kept: dict[str, Certificate] = {}
        for pid, cert in self._certs.items():
            try:
                verify_certificate(cert, candidate, now_ms)
            except RosterError:
                continue
            kept[pid] = cert
        self._certs = kept
        self._by_cert = {
            org: [p for p in peers if p in kept and kept[p].org == org and candidate.org(org) is not None]
            for org, peers in self._by_cert.items()
        }
        return Adoption(None, candidate.version)

    def refused_now(self, peers: Iterable[str], now_ms: int) -> list[str]:
        """Those of ``peers`` the gate refuses now (to disconnect after an adoption or at expiry)."""
        return [p for p in peers if self.reason(p, now_ms) is not None]

    # --------------------------------------------------------------------------------- influence caps
    def groups(self) -> dict[str, str]:
        """peer id -> org of every member listed or admitted by certificate (for the engine's share caps)."""
        out = {m.peer_id: m.org for m in self.roster.members}
        for org, peers in self._by_cert.items():
            for pid in peers:
                out.setdefault(pid, org)
        return out

    def caps(self) -> dict[str, float]:
        """org -> the most its nodes together may weigh in this peer's mix (orgs without a cap left out)."""
        return {o.name: o.max_share for o in self.roster.orgs if o.max_share_ppm < 1_000_000}

    def summary(self, now_ms: int) -> dict[str, object]:
        """The gate's state for the peer's status."""
        r = self.roster
        return {
            "network_id": r.network_id,
            "version": r.version,
            "expires_ms": r.expires_ms,
            "expired": r.expired(now_ms),
            "members": len(r.members),
            "orgs": len(r.orgs),
            "certified": sum(len(p) for p in self._by_cert.values()),
            "refused": dict(self.refused),
            "rosters_refused": dict(self.rosters_refused),
            "certs_refused": dict(self.certs_refused),
        }
