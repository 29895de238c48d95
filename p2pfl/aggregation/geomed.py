"""The geometric median (smoothed Weiszfeld): the rotation-invariant rule with breakdown point 1/2."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from p2pfl.aggregation._distances import _sq_dists_to
from p2pfl.aggregation._inputs import F32, _as_stack, _as_weights, _check_int, _drop_zero_rows
from p2pfl.errors import AggregationError


def geometric_median(
    stack: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    eps: float = 1e-8,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> F32:
    """Geometric median by the smoothed Weiszfeld iteration (RFA, Pillutla et al. 2022).

    Starts at the weighted mean and iterates ``z <- sum(b_i x_i) / sum(b_i)`` with
    ``b_i = w_i / max(eps, |x_i - z|)``; ``eps`` keeps a row that coincides with ``z`` from dividing by
    zero. Stops when ``|z_new - z| <= tol * max(1, |z|)`` or after ``max_iter`` iterations. Breakdown
    point 1/2 and rotation-invariant; each iteration costs two passes over the stack.
    """
    if not (eps > 0 and math.isfinite(eps)):
        raise AggregationError(f"eps must be positive, got {eps!r}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise AggregationError(f"tol must be non-negative, got {tol!r}")
    max_iter = _check_int(max_iter, "max_iter", 1)
    x = _as_stack(stack)
    w = _as_weights(weights, x.shape[0])
    x, w = _drop_zero_rows(x, w)
    k = x.shape[0]
    wv = np.ones(k, dtype=np.float64) if w is None else w
    z = np.asarray((wv / wv.sum()).astype(np.float32) @ x, dtype=np.float32)
    if k == 1:
        return z
    for _ in range(max_iter):
        dist = np.sqrt(_sq_dists_to(x, z))
        b = wv / np.maximum(dist, eps)
        z_new = np.asarray((b / b.sum()).astype(np.float32) @ x, dtype=np.float32)
        step = float(np.linalg.norm((z_new - z).astype(np.float64)))
        z = z_new
        if step <= tol * max(1.0, float(np.linalg.norm(z.astype(np.float64)))):
            break
    return z
