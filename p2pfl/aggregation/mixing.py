"""Nearest-neighbour mixing: the pre-step that lifts a robust rule to its optimal constant."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from p2pfl.aggregation._distances import _LA_BLOCK, _pairwise_sq_dists
from p2pfl.aggregation._inputs import F32, _as_stack, _check_int, _positive_weights
from p2pfl.errors import AggregationError


def nearest_neighbour_mixing(stack: ArrayLike, f: int, weights: ArrayLike | None = None) -> F32:
    """Nearest-neighbour mixing (Allouah et al. 2023): replace each row by the mean of its ``k - f``
    nearest rows (itself included). Composed with median, trimmed mean, Krum or the geometric median it
    gives those rules the optimal robustness constant against ``f < k/2`` bad rows. Returns a new
    ``(k, d)`` stack; ties in distance go to the lower index.

    With ``weights`` (one per row, positive) each neighbourhood's mean is weighted: many light rows (young
    identities, a capped organisation) cannot outvote a heavy one inside a neighbourhood by their count.
    """
    x = _as_stack(stack)
    k, d = x.shape
    f = _check_int(f, "f", 0)
    if f >= k:
        raise AggregationError(f"nearest-neighbour mixing needs f < k, got f={f}, k={k}")
    w = _positive_weights(weights, k)
    if f == 0:
        row = np.full(k, 1.0 / k) if w is None else w / w.sum()
        mix = np.tile(row.astype(np.float32), (k, 1))
    else:
        dist = _pairwise_sq_dists(x)
        np.fill_diagonal(dist, -1.0)  # a row is always its own nearest neighbour
        nearest = np.argsort(dist, axis=1, kind="stable")[:, : k - f]
        mix = np.zeros((k, k), dtype=np.float32)
        if w is None:
            np.put_along_axis(mix, nearest, np.float32(1.0 / (k - f)), axis=1)
        else:
            picked = w[nearest]
            np.put_along_axis(
                mix, nearest, (picked / picked.sum(axis=1, keepdims=True)).astype(np.float32), 1
            )
    out = np.empty_like(x)
    for s in range(0, d, _LA_BLOCK):
        np.matmul(mix, x[:, s : s + _LA_BLOCK], out=out[:, s : s + _LA_BLOCK])
    return out
