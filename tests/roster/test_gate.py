"""The admission gate: who is admitted, every refusal counted by reason, adoption and revocation."""

from __future__ import annotations

import pytest

from p2pfl.roster import Gate, RosterError
from p2pfl.roster.model import PPM
from tests.roster.strategies import DAY, NOW, ORG_B, cert_for, closed_roster, pid


def gate(**kw: object) -> Gate:
    return Gate(closed_roster({pid(1): "a", pid(2): "b"}, **kw), network_id="net")  # type: ignore[arg-type]


def test_members_are_admitted_and_others_refused_and_counted() -> None:
    g = gate()
    assert g.check(pid(1), NOW) and g.check(pid(2), NOW)
    assert not g.check(pid(3), NOW)
    assert not g.check(pid(3), NOW)
    assert {"not_member": 2} == dict(g.refused)


def test_an_unsigned_or_foreign_roster_cannot_start_a_gate() -> None:
    with pytest.raises(RosterError) as err:
        Gate(closed_roster({pid(1): "a"}), network_id="other")
    assert err.value.reason == "wrong_network"


def test_an_expired_roster_refuses_everyone_even_members() -> None:
    g = gate(expires_ms=NOW + 5)
    assert g.check(pid(1), NOW + 4)
    assert not g.check(pid(1), NOW + 5)
    assert {"roster_expired": 1} == dict(g.refused)
    assert g.summary(NOW + 5)["expired"] is True


def test_a_newer_roster_revokes_and_the_older_cannot_be_replayed() -> None:
    g = gate()
    v2 = closed_roster({pid(1): "a"}, version=2, revoked=(pid(2),))
    assert g.offer(v2, NOW).reason is None
    assert [pid(2)] == g.refused_now([pid(1), pid(2)], NOW)
    assert not g.check(pid(2), NOW)
    assert {"revoked": 1} == dict(g.refused)
    # the revoked member replays version 1, which still lists it
    assert "stale_version" == g.offer(closed_roster({pid(1): "a", pid(2): "b"}), NOW).reason
    assert g.roster.version == 2 and not g.check(pid(2), NOW)


def test_a_certified_member_is_admitted_within_its_orgs_max_nodes() -> None:
    g = Gate(closed_roster({pid(1): "a"}, max_nodes=3), network_id="net")  # 1 listed: 2 certificates fit
    for i in (5, 6, 7):
        assert g.add_certificate(cert_for(pid(i)), NOW) is None
    assert g.check(pid(5), NOW) and g.check(pid(6), NOW)
    assert not g.check(pid(7), NOW)
    assert {"org_full": 1} == dict(g.refused)
    assert g.check(pid(5), NOW)  # the admitted keep their place
    assert {pid(1): "a", pid(5): "a", pid(6): "a"} == {p: o for p, o in g.groups().items() if o == "a"}


def test_certificates_that_do_not_verify_are_not_kept() -> None:
    g = gate()
    assert "bad_signature" == g.add_certificate(cert_for(pid(5), "a", key=ORG_B), NOW)
    assert not g.check(pid(5), NOW)
    assert {"bad_signature": 1} == dict(g.certs_refused)


def test_a_certificate_expires_and_its_org_can_be_revoked() -> None:
    g = gate()
    assert g.add_certificate(cert_for(pid(5), expires_ms=NOW + 10), NOW) is None
    assert g.check(pid(5), NOW)
    assert not g.check(pid(5), NOW + 10)
    assert g.add_certificate(cert_for(pid(6)), NOW) is None
    assert g.check(pid(6), NOW)
    without_a = closed_roster({pid(2): "b"}, version=2).revoke_org("a")  # unsigned: re-sign below
    from p2pfl.roster import sign
    from tests.roster.strategies import OPERATOR

    v2 = sign(without_a, OPERATOR, version=2, expires_ms=NOW + DAY)
    assert g.offer(v2, NOW).reason is None
    assert not g.check(pid(6), NOW)  # org a's certificates no longer admit anyone
    assert g.refused["not_member"] >= 1


def test_share_caps_are_reported_per_org() -> None:
    g = Gate(closed_roster({pid(1): "a", pid(2): "b"}, max_share=PPM // 4), network_id="net")
    assert {"a": 0.25} == g.caps()
    assert {pid(1): "a", pid(2): "b"} == g.groups()


def test_a_roster_from_another_operator_is_counted_not_adopted() -> None:
    from p2pfl.identity import Identity

    g = gate()
    mallory = Identity(bytes([66]) * 32)
    theirs = closed_roster({pid(9): "a"}, version=50, operator=mallory)
    assert "wrong_operator" == g.offer(theirs, NOW).reason
    assert {"wrong_operator": 1} == dict(g.rosters_refused)
    assert not g.check(pid(9), NOW)
