"""Coordinate-wise rules: mean, median and trimmed mean, each coordinate aggregated on its own.

The unweighted median and trimmed mean run on :mod:`p2pfl.aggregation.sortnet` and are bit-for-bit
their numpy definitions; weighted, they argsort column blocks (several times slower).
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numpy.typing import ArrayLike

from p2pfl.aggregation._inputs import F32, F64, _as_stack, _as_weights, _drop_zero_rows
from p2pfl.aggregation.sortnet import _BLOCK, _order_statistics_blocked
from p2pfl.errors import AggregationError

#: Blocks for the weighted (argsort-based) median / trimmed mean.
_WEIGHTED_BLOCK: Final[int] = 8192


def mean(stack: ArrayLike, weights: ArrayLike | None = None) -> F32:
    """Arithmetic (optionally weighted) mean of the rows. Not robust: one row moves it anywhere.

    Unweighted it is exactly ``numpy.mean(stack, axis=0)`` on the float32 stack; weighted, a float32
    matrix-vector product with the normalised weights.
    """
    x = _as_stack(stack)
    w = _as_weights(weights, x.shape[0])
    x, w = _drop_zero_rows(x, w)
    if w is None:
        return np.asarray(np.mean(x, axis=0), dtype=np.float32)
    return np.asarray((w / w.sum()).astype(np.float32) @ x, dtype=np.float32)


def median(stack: ArrayLike, weights: ArrayLike | None = None, *, block: int = _BLOCK) -> F32:
    """Coordinate-wise median, bit-for-bit ``numpy.median(stack, axis=0)`` when unweighted.

    For even ``k`` the result is the float32 mean ``(a + b) / 2`` of the two middle values, exactly as
    numpy forms it (it overflows to ``inf`` where numpy's does). Tolerates fewer than ``k/2`` bad rows
    per coordinate.

    ``weights``: zero-weight rows are dropped; if the rest are equal this is the plain median. Otherwise
    it is the weighted median: the smallest value whose cumulative weight reaches half of the total,
    averaged with the next value when the cumulative weight hits one half exactly (so equal weights give
    the plain median). The weighted path argsorts blocks and is several times slower.
    """
    x = _as_stack(stack)
    w = _as_weights(weights, x.shape[0])
    x, w = _drop_zero_rows(x, w)
    if block < 1:
        raise AggregationError(f"block must be >= 1, got {block}")
    if w is not None:
        return _weighted_median(x, w)
    k, d = x.shape
    out = np.empty(d, dtype=np.float32)
    if k % 2 == 1:

        def emit_odd(s: int, e: int, rows: list[F32]) -> None:
            out[s:e] = rows[0]

        _order_statistics_blocked(x, (k // 2,), emit_odd, block)
    else:
        half = np.float32(2.0)

        def emit_even(s: int, e: int, rows: list[F32]) -> None:
            o = out[s:e]
            np.add(rows[0], rows[1], out=o)
            np.divide(o, half, out=o)

        with np.errstate(over="ignore"):
            _order_statistics_blocked(x, (k // 2 - 1, k // 2), emit_even, block)
    return out


def trimmed_mean(
    stack: ArrayLike, beta: float, weights: ArrayLike | None = None, *, block: int = _BLOCK
) -> F32:
    """Coordinate-wise trimmed mean: drop the ``t = floor(beta * k)`` smallest and largest values.

    Unweighted it equals ``numpy.mean(numpy.sort(stack, axis=0)[t:k-t], axis=0)`` bit for bit (the kept
    values are summed in rank order in float32, then divided, as numpy does) -- also for ``t = 0``, so
    the result never depends on the row order, unlike a float32 ``mean``. Tolerates up to ``t`` bad
    rows per coordinate; ``beta`` must lie in ``[0, 0.5)``.

    ``weights``: zero-weight rows are dropped first (``t`` is computed on the rows left); with unequal
    weights the kept values are averaged with their rows' weights (argsort path, slower).
    """
    if not isinstance(beta, int | float) or isinstance(beta, bool) or not (0.0 <= beta < 0.5):
        raise AggregationError(f"beta must be a number in [0, 0.5), got {beta!r}")
    if block < 1:
        raise AggregationError(f"block must be >= 1, got {block}")
    x = _as_stack(stack)
    w = _as_weights(weights, x.shape[0])
    x, w = _drop_zero_rows(x, w)
    k, d = x.shape
    t = math.floor(beta * k)
    if w is not None:
        return _weighted_trimmed_mean(x, w, t)
    kept = k - 2 * t
    if kept == 1:
        return median(x, block=block)
    out = np.empty(d, dtype=np.float32)
    count = np.float32(kept)

    def emit(s: int, e: int, rows: list[F32]) -> None:
        o = out[s:e]
        np.add(rows[0], rows[1], out=o)
        for r in rows[2:]:
            np.add(o, r, out=o)
        np.divide(o, count, out=o)

    with np.errstate(over="ignore"):
        _order_statistics_blocked(x, tuple(range(t, k - t)), emit, block)
    return out


def _weighted_median(x: F32, w: F64) -> F32:
    k, d = x.shape
    out = np.empty(d, dtype=np.float32)
    total = float(w.sum())
    half = total / 2.0
    slack = 1e-12 * total
    for s in range(0, d, _WEIGHTED_BLOCK):
        e = min(s + _WEIGHTED_BLOCK, d)
        order = np.argsort(x[:, s:e], axis=0, kind="stable")
        vals = np.take_along_axis(x[:, s:e], order, axis=0)
        cum = np.cumsum(w[order], axis=0)
        idx = np.argmax(cum >= half - slack, axis=0)
        cols = np.arange(e - s)
        lo = vals[idx, cols]
        exact_half = np.abs(cum[idx, cols] - half) <= slack
        hi = vals[np.minimum(idx + 1, k - 1), cols]
        with np.errstate(over="ignore"):
            out[s:e] = np.where(exact_half, (lo + hi) / np.float32(2.0), lo)
    return out


def _weighted_trimmed_mean(x: F32, w: F64, t: int) -> F32:
    k, d = x.shape
    out = np.empty(d, dtype=np.float32)
    for s in range(0, d, _WEIGHTED_BLOCK):
        e = min(s + _WEIGHTED_BLOCK, d)
        order = np.argsort(x[:, s:e], axis=0, kind="stable")[t : k - t]
        vals = np.take_along_axis(x[:, s:e], order, axis=0).astype(np.float64)
        wk = w[order]
        out[s:e] = (vals * wk).sum(axis=0) / wk.sum(axis=0)
    return out
