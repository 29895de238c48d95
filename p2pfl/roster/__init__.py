"""Membership of closed networks: a roster signed by the network's operator, member certificates signed by
organisations, and the admission gate a peer enforces (see ``docs/membership.md``).

Pure except :mod:`p2pfl.roster.files` (load/save) and :mod:`p2pfl.roster.service` (the peer's side of it:
the transport hooks and the roster exchange)."""

from __future__ import annotations

from p2pfl.roster.codec import (
    MAX_ROSTER_BYTES,
    decode_cert,
    decode_roster,
    encode_cert,
    encode_roster,
)
from p2pfl.roster.errors import RosterError
from p2pfl.roster.files import load_certificate, load_roster, save_certificate, save_roster
from p2pfl.roster.gate import Adoption, Gate
from p2pfl.roster.model import Certificate, Member, Org, Roster, roles_of
from p2pfl.roster.rules import certify, newer, sign, verify, verify_certificate, why_not_newer

__all__ = [
    "MAX_ROSTER_BYTES",
    "Adoption",
    "Certificate",
    "Gate",
    "Member",
    "Org",
    "Roster",
    "RosterError",
    "certify",
    "decode_cert",
    "decode_roster",
    "encode_cert",
    "encode_roster",
    "load_certificate",
    "load_roster",
    "newer",
    "roles_of",
    "save_certificate",
    "save_roster",
    "sign",
    "verify",
    "verify_certificate",
    "why_not_newer",
]
