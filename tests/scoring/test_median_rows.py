"""numbers.median_rows is np.median along the first axis (the heading signal's centre and the neighbourhood
ratios of drift trust use it for speed), NaN, infinities and ties included; neighbourhood_ratios gives the
answers of its np.median version."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from p2pfl.scoring.badrun import neighbourhood_ratios
from p2pfl.scoring.numbers import median_rows

VALUES = st.sampled_from([0.0, 1.0, -1.0, 2.5, 1e-300, -3.25, 7.0, math.inf, -math.inf, math.nan])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 9), st.integers(1, 5), st.data())
def test_it_is_np_median_on_the_first_axis(rows: int, cols: int, data: st.DataObject) -> None:
    special = data.draw(st.booleans())
    if special:
        flat = data.draw(st.lists(VALUES, min_size=rows * cols, max_size=rows * cols))
        stack = np.array(flat, dtype=np.float64).reshape(rows, cols)
    else:
        stack = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).normal(size=(rows, cols))
    with np.errstate(invalid="ignore"):  # inf + -inf: NaN on purpose
        expected = np.median(stack, axis=0)
        got = median_rows(stack)
        got_column, expected_column = median_rows(stack[:, 0]), np.median(stack[:, 0])
    np.testing.assert_array_equal(got, expected)  # NaN where np.median has NaN, the same bits elsewhere
    np.testing.assert_array_equal(got_column, expected_column)


def _reference(
    own: NDArray[np.float64], models: Mapping[str, NDArray[np.float64]], reference: Collection[str] | None
) -> dict[str, float]:
    """neighbourhood_ratios as it was written with np.median."""
    names = sorted(models)
    stack = np.vstack([own[None, :], *(models[p][None, :] for p in names)])
    rows = [0, *(i + 1 for i, p in enumerate(names) if reference is None or p in reference)]
    centre = np.median(stack[rows], axis=0)
    dists = np.linalg.norm(stack - centre, axis=1)
    med = float(np.median(dists[rows]))
    if med > 0:
        return {p: float(dists[i + 1]) / med for i, p in enumerate(names)}
    return {p: (0.0 if dists[i + 1] == 0 else math.inf) for i, p in enumerate(names)}


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 8), st.integers(1, 6), st.integers(0, 2**32 - 1), st.booleans(), st.booleans())
def test_neighbourhood_ratios_give_the_np_median_answers(
    n: int, dim: int, seed: int, ties: bool, subset: bool
) -> None:
    rng = np.random.default_rng(seed)
    own = rng.normal(size=dim)
    models = {f"p{i}": (own.copy() if ties and i % 2 else rng.normal(size=dim)) for i in range(n)}
    reference = sorted(models)[: max(1, n // 2)] if subset else None
    assert neighbourhood_ratios(own, models, reference) == _reference(own, models, reference)
