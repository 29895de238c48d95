"""Bucketing (Karimireddy et al. 2022): average rows in random buckets before a robust rule.

Why: on non-IID data a robust rule treats a neighbour whose data differ from the rest as an outlier and
discounts it (the geometric median gave a dumbbell clique's two bridge rows an effective share of 0.03
where the mean gives 0.22: docs/learning.md), so what only that neighbour knows never reaches the peer.
Averaging random buckets of ``size`` rows first shrinks the honest rows' spread by about ``sqrt(size)``
while each bad row still spoils only its own bucket: the rule then sees fewer, closer rows. The price is
robustness: ``b`` bad rows can spoil up to ``b`` buckets of ``k / size``, so the fraction of bad inputs
the rule tolerates is divided by ``size``.

The own model (row 0) shares its bucket with ``size - 1`` random neighbours, the remaining rows are
bucketed in random order (the last bucket may be smaller). The permutation comes from the caller's
generator: the functions here stay deterministic given it, and a peer draws it from a generator keyed
by its secret, so a neighbour cannot predict whom it is bucketed with.
"""

from __future__ import annotations

import numpy as np

from p2pfl.aggregation._inputs import F32, F64, _check_int, _positive_weights

__all__ = ["bucket_rows"]


def bucket_rows(x: F32, weights: F64 | None, size: int, rng: np.random.Generator) -> tuple[F32, F64 | None]:
    """The ``(ceil(k / size), d)`` stack of bucket means of the ``(k, d)`` stack ``x`` (row 0 the own
    model, kept in the first bucket) and their weights (each bucket's total; ``None`` when ``weights`` is
    ``None`` and every bucket is full, so the rule's equal-weight path still runs). Within a bucket the
    mean is weighted. ``size == 1`` or fewer than three rows: ``x`` and ``weights`` unchanged."""
    size = _check_int(size, "bucket size", 1)
    k = x.shape[0]
    if size == 1 or k < 3:
        return x, weights
    checked = _positive_weights(weights, k)
    w = np.ones(k) if checked is None else checked
    order = np.concatenate(([0], 1 + rng.permutation(k - 1)))
    starts = range(0, k, size)
    out = np.empty((len(starts), x.shape[1]), dtype=np.float32)
    totals = np.empty(len(starts))
    for i, s in enumerate(starts):
        rows = order[s : s + size]
        wb = w[rows]
        totals[i] = wb.sum()
        out[i] = (wb / totals[i]).astype(np.float32) @ x[rows]
    equal = weights is None and k % size == 0
    return out, None if equal else totals
