"""p2pfl.protocol.dialling: the lower peer id of a pair dials a static peer at once, the higher one after a
grace, so peers started together do not cross their dials, and no peer's reachability rests on the other."""

from __future__ import annotations

import pytest

from p2pfl.protocol.dialling import DIAL_GRACE_S, dials_now, static_dials

LOW, HIGH = "12D3KooWA", "12D3KooWB"


def test_the_lower_id_dials_at_once() -> None:
    assert dials_now(LOW, HIGH, unconnected_since=10.0, now=10.0, grace_s=2.0)


@pytest.mark.parametrize(("now", "dials"), [(10.0, False), (11.99, False), (12.0, True), (50.0, True)])
def test_the_higher_id_dials_once_the_grace_has_passed(now: float, dials: bool) -> None:
    assert dials_now(HIGH, LOW, unconnected_since=10.0, now=now, grace_s=2.0) is dials


def test_of_two_peers_started_together_only_the_lower_dials_first() -> None:
    low_book: dict[str, float] = {}
    high_book: dict[str, float] = {}
    assert static_dials(LOW, [HIGH], set(), low_book, now=0.0) == [HIGH]
    assert static_dials(HIGH, [LOW], set(), high_book, now=0.0) == []
    assert high_book == {LOW: 0.0}


def test_a_higher_peer_whose_lower_neighbour_never_dials_dials_it_after_the_grace() -> None:
    """A lower neighbour that is down, behind a NAT or does not list us: we dial, one grace late."""
    book: dict[str, float] = {}
    assert static_dials(HIGH, [LOW], set(), book, now=5.0) == []
    assert static_dials(HIGH, [LOW], set(), book, now=5.0 + DIAL_GRACE_S / 2) == []
    assert static_dials(HIGH, [LOW], set(), book, now=5.0 + DIAL_GRACE_S) == [LOW]
    assert static_dials(HIGH, [LOW], set(), book, now=5.0 + 3 * DIAL_GRACE_S) == [LOW]  # and keeps trying


def test_a_connected_peer_is_not_dialled_and_its_grace_restarts_when_it_drops() -> None:
    book = {LOW: 0.0}
    assert static_dials(HIGH, [LOW], {LOW}, book, now=100.0) == []
    assert book == {}
    assert static_dials(HIGH, [LOW], set(), book, now=200.0) == []  # dropped just now: the lower one redials
    assert static_dials(HIGH, [LOW], set(), book, now=200.0 + DIAL_GRACE_S) == [LOW]


def test_ourselves_is_never_dialled_and_the_order_is_kept() -> None:
    others = ["12D3KooWZ", LOW, "12D3KooWC"]
    assert static_dials("12D3KooW0", [*others, "12D3KooW0"], set(), {}, now=0.0) == others
