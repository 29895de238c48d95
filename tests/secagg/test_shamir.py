"""Shamir sharing: any t shares rebuild the secret; any t-1 shares are consistent with every secret."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.secagg import SecAggError
from p2pfl.secagg.shamir import combine, split, split_int

from .harness import det_rand


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(0, 1000), st.data())
def test_any_t_of_n_shares_rebuild_the_secret(secret: bytes, seed: int, data: st.DataObject) -> None:
    shares = split(secret, 8, 5, det_rand(seed))
    xs = data.draw(st.lists(st.integers(1, 8), min_size=5, max_size=8, unique=True))
    assert combine({x: shares[x - 1] for x in xs}, 5) == secret


def test_fewer_than_t_shares_are_refused() -> None:
    shares = split(bytes(range(32)), 8, 5, det_rand(0))
    with pytest.raises(SecAggError) as info:
        combine({x: shares[x - 1] for x in (1, 2, 3, 4)}, 5)
    assert info.value.reason == "below_threshold"


def test_any_t_minus_1_shares_are_consistent_with_every_secret_each_equally_likely() -> None:
    """Exhaustively in GF(31), t = 3 of n = 4: for every secret, every pair of share positions, the 31^2
    random polynomials give each of the 31^2 possible share pairs exactly once. So two shares are
    uniformly distributed whatever the secret: they say nothing about it (the same algebra as GF(2^521-1))."""
    p, t, n = 31, 3, 4
    for positions in itertools.combinations(range(1, n + 1), t - 1):
        for secret in range(p):
            seen: Counter[tuple[int, ...]] = Counter()
            for c1, c2 in itertools.product(range(p), repeat=2):
                coeffs = iter([c1, c2])  # split_int draws each coefficient as bytes: feed it these exactly
                values = split_int(secret, n, t, lambda k, it=coeffs: next(it).to_bytes(k, "big"), prime=p)
                seen[tuple(values[x - 1] for x in positions)] += 1
            assert len(seen) == p * p and set(seen.values()) == {1}


def test_a_tampered_share_gives_a_different_secret_not_an_error_so_callers_check_commitments() -> None:
    secret = bytes(range(32))
    shares = split(secret, 8, 5, det_rand(4))
    points = {x: shares[x - 1] for x in range(1, 6)}
    points[3] = (int.from_bytes(points[3], "big") ^ 1).to_bytes(66, "big")
    try:
        assert combine(points, 5) != secret
    except SecAggError as exc:
        assert exc.reason == "unrecoverable"
