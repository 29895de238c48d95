"""Signatures, expiry and the adoption rule, each tested by the forgery or replay built to beat it."""

from __future__ import annotations

import dataclasses

import pytest

from p2pfl.identity import Identity
from p2pfl.roster import Member, RosterError, newer, sign, verify, verify_certificate, why_not_newer
from tests.roster.strategies import DAY, NOW, OPERATOR, ORG_A, ORG_B, cert_for, closed_roster, pid

MALLORY = Identity(bytes([66]) * 32)


def reason(fn: object, *args: object, **kw: object) -> str:
    with pytest.raises(RosterError) as err:
        fn(*args, **kw)  # type: ignore[operator]
    return err.value.reason


def test_a_signed_roster_verifies() -> None:
    roster = closed_roster({pid(1): "a"})
    assert roster is verify(roster, network_id="net", now_ms=NOW, operator=OPERATOR.public_key)


def test_an_edited_roster_no_longer_verifies() -> None:
    roster = closed_roster({pid(1): "a"})
    # an attacker adds itself and keeps the operator's signature
    forged = dataclasses.replace(roster.with_member(Member(pid(9), "a")), signature=roster.signature)
    assert "bad_signature" == reason(verify, forged, network_id="net", now_ms=NOW)
    assert "unsigned" == reason(verify, roster.with_member(Member(pid(9), "a")), network_id="net", now_ms=NOW)


def test_a_roster_resigned_by_another_key_is_refused_where_the_operator_is_known() -> None:
    roster = closed_roster({pid(1): "a"})
    # Mallory swaps in her own key and signs: the signature is valid, the operator is not the network's
    theirs = closed_roster({pid(1): "a", pid(9): "a"}, version=99, operator=MALLORY)
    verify(theirs, network_id="net", now_ms=NOW)  # self-consistent...
    assert "wrong_operator" == reason(
        verify, theirs, network_id="net", now_ms=NOW, operator=OPERATOR.public_key
    )
    assert "wrong_operator" == why_not_newer(roster, theirs, NOW)  # ...but never adopted


def test_another_networks_roster_is_refused() -> None:
    other = closed_roster({pid(1): "a"}, network_id="other", version=5)
    assert "wrong_network" == reason(verify, other, network_id="net", now_ms=NOW)
    assert "wrong_network" == why_not_newer(closed_roster({}), other, NOW)


def test_expiry_is_checked_against_the_given_now() -> None:
    roster = closed_roster({pid(1): "a"}, expires_ms=NOW + 10)
    verify(roster, network_id="net", now_ms=NOW + 9)
    assert "expired" == reason(verify, roster, network_id="net", now_ms=NOW + 10)


def test_an_older_or_equal_version_is_never_adopted() -> None:
    v1 = closed_roster({pid(1): "a", pid(2): "a"}, version=1)
    v2 = closed_roster({pid(1): "a"}, version=2, revoked=(pid(2),))
    assert newer(v1, v2, NOW)
    # replaying the older, more permissive roster to a peer that holds v2
    assert "stale_version" == why_not_newer(v2, v1, NOW)
    assert "stale_version" == why_not_newer(v2, v2, NOW)


def test_a_newer_but_expired_roster_is_not_adopted() -> None:
    v1 = closed_roster({pid(1): "a"}, version=1)
    old_v9 = closed_roster({pid(1): "a"}, version=9, expires_ms=NOW - 1)
    assert "expired" == why_not_newer(v1, old_v9, NOW)


def test_a_newer_version_with_a_forged_signature_is_not_adopted() -> None:
    v1 = closed_roster({pid(1): "a"}, version=1)
    v2 = closed_roster({pid(1): "a", pid(9): "b"}, version=2)
    forged = dataclasses.replace(v2, signature=bytes(64))
    assert "bad_signature" == why_not_newer(v1, forged, NOW)


def test_only_the_operator_key_signs() -> None:
    unsigned = closed_roster({})
    with pytest.raises(RosterError) as err:
        sign(unsigned, MALLORY, version=2, expires_ms=NOW + DAY)
    assert err.value.reason == "wrong_operator"


def test_a_certificate_admits_under_its_org() -> None:
    roster = closed_roster({pid(1): "a"})
    assert "a" == verify_certificate(cert_for(pid(5)), roster, NOW).name


@pytest.mark.parametrize(
    ("cert", "why"),
    [
        (cert_for(pid(5), "a", key=ORG_B), "bad_signature"),  # org b's key claims to speak for org a
        (cert_for(pid(5), "zzz"), "unknown_org"),
        (cert_for(pid(5), expires_ms=NOW), "cert_expired"),
        (cert_for(pid(7)), "revoked"),
        (dataclasses.replace(cert_for(pid(5)), peer_id=pid(6)), "bad_signature"),  # a stolen cert re-aimed
        (dataclasses.replace(cert_for(pid(5)), network_id="other"), "wrong_network"),
        (dataclasses.replace(cert_for(pid(5)), signature=b""), "bad_signature"),
    ],
)
def test_forged_expired_and_revoked_certificates_are_refused(cert: object, why: str) -> None:
    roster = closed_roster({pid(1): "a"}, revoked=(pid(7),))
    assert why == reason(verify_certificate, cert, roster, NOW)


def test_org_keys_are_distinct_from_the_operator() -> None:
    assert len({OPERATOR.public_key, ORG_A.public_key, ORG_B.public_key}) == 3
