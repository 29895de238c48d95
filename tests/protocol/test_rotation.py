"""Link rotation's decision (p2pfl.protocol.rotation): pure, driven with explicit rounds and a seeded rng."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pfl.errors import ConfigError
from p2pfl.protocol.rotation import MAX_RESTS, Rest, due, rotate


def test_due_every_k_rounds_and_never_before_the_first_round() -> None:
    assert [r for r in range(0, 10) if due(r, 3)] == [3, 6, 9]
    assert not any(due(r, 0) for r in range(10))


def test_dials_one_more_than_the_degree_then_closes_the_oldest() -> None:
    links = {"a": 1, "b": 4, "c": 2, "d": 7}
    decision = rotate(links, ["e", "f", "a"], degree=4, rng=random.Random(1))
    assert set(decision.dial) == {"e", "f"}  # a linked peer is no candidate
    assert decision.want == 1
    assert decision.to_drop(1) == ("a",)  # the oldest link
    assert decision.to_drop(0) == ()  # a dial that failed costs no link


def test_pinned_links_are_never_closed() -> None:
    links = {"static": 0, "b": 3, "c": 5}
    decision = rotate(links, ["x", "y", "z"], degree=2, rng=random.Random(2), pinned={"static"})
    assert "static" not in decision.oldest
    assert decision.want == 0  # three links for a degree of 2: nothing to dial, the oldest free one goes
    assert decision.to_drop(0) == ("b",)


def test_below_the_degree_it_dials_up_to_it_plus_one() -> None:
    decision = rotate({"a": 1}, ["b", "c", "d", "e"], degree=3, rng=random.Random(3))
    assert decision.want == 3
    assert decision.to_drop(3) == ("a",)
    assert decision.to_drop(2) == ()  # two new links: at the degree with the old one kept


def test_with_nobody_to_dial_it_only_trims_links_beyond_the_degree() -> None:
    decision = rotate({"a": 1, "b": 2, "c": 3}, [], degree=2, rng=random.Random(4))
    assert decision.dial == () and decision.to_drop(0) == ("a",)
    assert rotate({"a": 1, "b": 2}, ["a"], degree=2, rng=random.Random(4)).to_drop(0) == ()


def test_a_degree_below_one_is_refused() -> None:
    with pytest.raises(ConfigError):
        rotate({}, ["a"], degree=0, rng=random.Random(0))


@given(
    held=st.integers(0, 12),
    pool=st.integers(0, 12),
    degree=st.integers(1, 8),
    pinned=st.integers(0, 3),
    answers=st.lists(st.booleans(), max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
def test_executing_a_decision_never_closes_pinned_links_and_keeps_the_degree(  # noqa: PLR0917
    held: int, pool: int, degree: int, pinned: int, answers: list[bool], seed: int
) -> None:
    rng = random.Random(seed)
    links = {f"l{i}": rng.randrange(10) for i in range(held)}
    pins = {f"l{i}" for i in range(min(pinned, held))}
    candidates = [f"c{i}" for i in range(pool)]
    decision = rotate(links, candidates, degree=degree, rng=rng, pinned=pins)
    made = 0
    for i, _c in enumerate(decision.dial):  # the caller's loop: dial until ``want`` answered
        if made >= decision.want:
            break
        made += answers[i] if i < len(answers) else True
    closed = decision.to_drop(made)
    assert not set(closed) & pins and set(closed) <= set(links)
    after = held + made - len(closed)
    free = held - len(pins & set(links))
    # never below the degree because of the rotation, never above it unless pinned links force it
    assert after >= min(degree, held + made)
    assert after <= max(degree, held + made - free)
    if closed:  # only ever the oldest free links
        oldest_kept = min((links[p] for p in links if p not in pins and p not in closed), default=None)
        assert oldest_kept is None or max(links[p] for p in closed) <= oldest_kept


def test_between_rotations_it_only_tops_up_to_the_degree() -> None:
    decision = rotate({"a": 1}, ["b", "c", "d"], degree=3, rng=random.Random(5), turn=False)
    assert decision.want == 2 and decision.to_drop(2) == () and decision.to_drop(0) == ()
    at_degree = rotate({"a": 1, "b": 2}, ["c"], degree=2, rng=random.Random(5), turn=False)
    assert at_degree.want == 0 and at_degree.to_drop(0) == ()


def test_an_address_names_its_peer_id_in_its_last_component() -> None:
    from p2pfl.protocol.dialling import addr_peer_id

    assert addr_peer_id("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWabc") == "12D3KooWabc"
    assert addr_peer_id("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWabc/") == "12D3KooWabc"
    assert addr_peer_id("memory/12D3KooWabc") == "12D3KooWabc"


def test_a_closed_link_rests_for_its_rounds_then_is_free() -> None:
    rest = Rest(4)
    rest.start("a", 10)  # closed after round 10
    assert [r for r in range(10, 17) if rest.resting("a", r)] == [10, 11, 12, 13, 14]
    assert not rest.resting("b", 11)
    assert len(rest) == 0  # an ended rest is forgotten when asked


def test_a_rest_of_zero_rounds_is_off_and_a_negative_one_a_config_error() -> None:
    rest = Rest(0)
    rest.start("a", 3)
    assert not rest.resting("a", 3) and len(rest) == 0
    with pytest.raises(ConfigError) as exc:
        Rest(-1)
    assert exc.value.key == "rotate_cooldown"


def test_rests_are_bounded_dropping_the_one_that_ends_first() -> None:
    rest = Rest(5)
    for i in range(MAX_RESTS + 3):
        rest.start(f"p{i}", i)
    assert len(rest) == MAX_RESTS
    assert not rest.resting("p0", 3) and rest.resting(f"p{MAX_RESTS + 2}", MAX_RESTS + 2)
