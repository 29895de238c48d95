"""Krum and Multi-Krum: select the rows closest to their nearest neighbours (whole rows, not coordinates)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from p2pfl.aggregation._distances import _pairwise_sq_dists
from p2pfl.aggregation._inputs import F32, F64, _as_stack, _check_int
from p2pfl.errors import AggregationError


def max_krum_f(k: int) -> int:
    """Largest ``f`` Krum accepts for ``k`` rows (``k >= 2f + 3``); -1 when ``k < 3``."""
    return (k - 3) // 2


def _krum_scores(x: F32, f: int) -> F64:
    k = x.shape[0]
    f = _check_int(f, "f", 0)
    if k < 2 * f + 3:
        raise AggregationError(
            f"Krum with f={f} needs k >= 2f+3 = {2 * f + 3} rows, got k={k}; lower f or add neighbours"
        )
    dist = _pairwise_sq_dists(x)
    n_closest = k - f - 2
    # Each row's score sums its n_closest smallest distances to the *other* rows.
    others = np.sort(dist + np.diag(np.full(k, np.inf)), axis=1)[:, :n_closest]
    scores: F64 = others.sum(axis=1)
    return scores


def krum(stack: ArrayLike, f: int) -> F32:
    """Krum (Blanchard et al. 2017): the row with the smallest sum of squared distances to its
    ``k - f - 2`` nearest other rows. Needs ``k >= 2f + 3``; tolerates ``f`` bad rows. Ties go to the
    lowest index. Returns a copy of one input row, so it is exact but high-variance under non-IID data.
    """
    x = _as_stack(stack)
    scores = _krum_scores(x, f)
    chosen: F32 = x[int(np.argmin(scores))].copy()
    return chosen


def multi_krum(stack: ArrayLike, f: int, m: int | None = None) -> F32:
    """Multi-Krum: the mean of the ``m`` rows with the best Krum scores (default ``m = k - f``).

    Scores are computed once (El Mhamdi et al. 2018); ties are broken by row index.
    """
    x = _as_stack(stack)
    scores = _krum_scores(x, f)
    k = x.shape[0]
    m = k - f if m is None else _check_int(m, "m", 1)
    if m > k:
        raise AggregationError(f"m must be <= k={k}, got {m}")
    chosen = np.sort(np.argsort(scores, kind="stable")[:m])
    return np.asarray(np.mean(x[chosen], axis=0), dtype=np.float32)
