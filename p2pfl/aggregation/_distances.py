"""Blocked Euclidean distances between rows, and from rows to a vector, accumulated in float64."""

from __future__ import annotations

from typing import Final

import numpy as np

from p2pfl.aggregation._inputs import F32, F64

#: Blocks for the O(kd) linear-algebra helpers (distances, mixing); only memory matters there.
_LA_BLOCK: Final[int] = 65536


def _pairwise_sq_dists(x: F32) -> F64:
    """Squared Euclidean distances between rows, ``(k, k)`` float64, in ``O(k * _LA_BLOCK)`` memory.

    Each column block is centred on its own mean before its float32 Gram matrix is formed, so a large
    common component (all models are close to each other) does not cancel catastrophically; block Gram
    matrices are accumulated in float64. A block whose float32 Gram overflows (coordinates beyond ~1e19, e.g.
    a sign-flipper compounding its scale every round) is recomputed in float64.
    """
    k, d = x.shape
    gram = np.zeros((k, k), dtype=np.float64)
    for s in range(0, d, _LA_BLOCK):
        blk = x[:, s : s + _LA_BLOCK]
        with np.errstate(over="ignore", invalid="ignore"):
            c = blk - blk.mean(axis=0, keepdims=True)
            g = (c @ c.T).astype(np.float64)
        if not np.isfinite(g).all():
            c64 = blk.astype(np.float64)
            c64 -= c64.mean(axis=0, keepdims=True)
            g = c64 @ c64.T
        gram += g
    sq = np.diag(gram)
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    np.fill_diagonal(dist, 0.0)
    return np.maximum(dist, 0.0)


def _sq_dists_to(x: F32, z: F32) -> F64:
    """Squared distance of every row of ``x`` to the vector ``z`` (float64 accumulation, blocked)."""
    k, d = x.shape
    acc = np.zeros(k, dtype=np.float64)
    for s in range(0, d, _LA_BLOCK):
        diff = x[:, s : s + _LA_BLOCK] - z[s : s + _LA_BLOCK]
        acc += np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
    return acc
