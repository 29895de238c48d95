"""Clipping toward a trusted centre: the self-centred pre-step and the centred-clipping rule.

Both bound how far one row can move the result (by ``tau``); they differ in the centre: the peer's own
model for :func:`self_centred_clip`, an iterated estimate started at ``center`` for :func:`centered_clip`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from p2pfl.aggregation._distances import _LA_BLOCK, _sq_dists_to
from p2pfl.aggregation._inputs import F32, _as_stack, _as_vector, _as_weights, _check_int, _drop_zero_rows
from p2pfl.errors import AggregationError


def self_centred_clip(own: ArrayLike, stack: ArrayLike, tau: float) -> F32:
    """Clip every row's difference from the peer's own model to norm ``tau`` (self-centred clipping).

    Row ``i`` becomes ``own + (x_i - own) * min(1, tau / |x_i - own|)``; rows already within ``tau``
    are returned unchanged bit for bit. This is the decentralised form of centred clipping
    (ClippedGossip, He et al. 2022): the centre is the only model the peer can trust, its own, so any
    number of bad neighbours can pull it by at most ``tau`` each.
    """
    if not (tau > 0 and math.isfinite(tau)):
        raise AggregationError(f"tau must be positive and finite, got {tau!r}")
    x = _as_stack(stack)
    d = x.shape[1]
    o = _as_vector(own, d, "own")
    dist = np.sqrt(_sq_dists_to(x, o))
    out = x.copy()
    for i in np.flatnonzero(dist > tau):
        scale = np.float32(tau / dist[i])
        row = out[i]
        np.subtract(row, o, out=row)
        np.multiply(row, scale, out=row)
        np.add(row, o, out=row)
    return out


def centered_clip(
    stack: ArrayLike,
    center: ArrayLike,
    tau: float,
    iters: int = 3,
    weights: ArrayLike | None = None,
) -> F32:
    """Centred clipping (Karimireddy et al. 2021): ``v <- v + mean_i(clip(x_i - v, tau))``, ``iters`` times.

    ``clip(u, tau) = u * min(1, tau / |u|)``. Each bad row moves ``v`` by at most ``tau * w_i / sum(w)``
    per iteration, so with a good ``center`` (the previous aggregate, or the peer's own model) the
    damage is bounded by the bad weight fraction times ``tau``. Two blocked passes per iteration.
    """
    if not (tau > 0 and math.isfinite(tau)):
        raise AggregationError(f"tau must be positive and finite, got {tau!r}")
    iters = _check_int(iters, "iters", 1)
    x = _as_stack(stack)
    k, d = x.shape
    v = _as_vector(center, d, "center").copy()
    w = _as_weights(weights, k)
    x, w = _drop_zero_rows(x, w)
    k = x.shape[0]
    wn = np.full(k, 1.0 / k) if w is None else w / w.sum()
    for _ in range(iters):
        dist = np.sqrt(_sq_dists_to(x, v))
        scale = np.ones(k)
        far = dist > tau
        scale[far] = tau / dist[far]
        coef = (wn * scale).astype(np.float32)
        for s in range(0, d, _LA_BLOCK):
            vb = v[s : s + _LA_BLOCK]
            vb += coef @ (x[:, s : s + _LA_BLOCK] - vb)
    return v
