"""Robust aggregation over a stack of flat model vectors.

Every function takes a ``(k, d)`` stack — ``k`` contributions of ``d`` parameters — and returns a ``(d,)``
vector (or, for the pre-steps, a new ``(k, d)`` stack). Everything here is pure: no I/O, no clock, no
randomness, and the inputs are never modified.

Conventions shared by all rules
-------------------------------
* Inputs are converted to C-contiguous ``float32`` (``float64`` is accepted and rounded once). Results
  are ``float32``.
* Non-finite values are assumed to have been filtered by the protocol (it rejects any delta that is not
  finite before it reaches a replica), so no function pays a full pass to check. They do not crash on
  them either: ``median``/``trimmed_mean`` propagate a NaN to the coordinate that holds it, like numpy.
* Weights are optional, non-negative, finite, one per row. A row of weight 0 is dropped before the rule
  runs, which is how the scorer's "excluded" neighbours leave the aggregate. When all remaining weights
  are equal the unweighted (fast, numpy-exact) path runs.
* Bad shapes, an empty stack, bad weights or an ``f`` too large for ``k`` raise
  :class:`~p2pfl.errors.AggregationError` naming the problem.

Tolerance and cost per rule (``k`` rows, ``d`` coordinates, ``b`` Byzantine rows)
-----------------------------------------------------------------------------------
============== ============================================= ==========================================
rule           tolerates                                     cost
============== ============================================= ==========================================
mean           nothing: one row moves it arbitrarily far     one pass, ``O(kd)``
median         ``b < k/2`` per coordinate (breakdown 1/2)    ``O(kd)`` with a sorting network over
                                                             cache-sized column blocks
trimmed_mean   ``b <= floor(beta*k)`` per coordinate         same as median
krum           ``k >= 2f + 3``, ``b <= f``                   ``O(k^2 d)`` (Gram matrix, BLAS)
multi_krum     as krum                                       as krum, plus a mean of ``m`` rows
geomed         ``b < k/2`` (breakdown 1/2, rotation-         ``O(kd)`` per Weiszfeld iteration
               invariant)
centered_clip  ``b/k`` below ~0.1-0.2 with a good centre     ``O(kd)`` per iteration
nnm (pre-step) lifts any of the above to its optimal          ``O(k^2 d)`` plus a ``(k, d)`` output
               constant for ``b < k/2`` (Allouah et al. '23)
self-clip      any number of rows: each neighbour moves the   ``O(kd)`` plus a ``(k, d)`` output
(pre-step)     peer by at most ``tau`` (He et al. '22)
============== ============================================= ==========================================

Performance
-----------
``numpy.median(stack, axis=0)`` copies the whole stack and runs introselect column by column with strided
access; on a (16, 1e7) float32 stack it is ~80x slower than the mean. :func:`median` and
:func:`trimmed_mean` instead walk the columns in blocks of ``_BLOCK`` (so the ``k`` block rows plus
scratch stay in cache) and run a *pruned* Batcher sorting network over whole rows with ``np.minimum`` /
``np.maximum``: every comparator becomes one vectorised call over the block, and comparators (or the
min/max half of one) that cannot reach the requested order statistics are removed at plan time. Extra
memory is ``O(k * _BLOCK)`` beyond the output. The result is bit-for-bit ``numpy.median``: the two middle
order statistics are identical values, and their mean is formed exactly as numpy does, ``(a + b) / 2`` in
float32 (so two values near float32 max overflow to ``inf`` exactly as ``numpy.median`` does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from p2pfl.errors import AggregationError

__all__ = [
    "DEFAULT_RULE",
    "RULES",
    "AggregationConfig",
    "aggregate",
    "centered_clip",
    "geometric_median",
    "krum",
    "max_krum_f",
    "mean",
    "median",
    "multi_krum",
    "nearest_neighbour_mixing",
    "self_centred_clip",
    "trimmed_mean",
]

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

RULES: Final[tuple[str, ...]] = ("mean", "median", "trimmed-mean", "krum", "multi-krum", "geomed", "cclip")
DEFAULT_RULE: Final[str] = "geomed"

#: Columns per block (16 rows x 32768 float32 = 2 MiB, L2/L3-resident). A sweep over 8k-256k columns on
#: the (16, 1e7) stack put the optimum at 32k-64k: smaller blocks pay numpy's per-call overhead
#: (~1 us x comparators x blocks), larger ones spill the slab out of cache.
_BLOCK: Final[int] = 32768
#: Up to this many rows a pruned sorting network is used; above, blocked ``np.sort``/``np.partition``.
_NETWORK_MAX_K: Final[int] = 32
#: Blocks for the O(kd) linear-algebra helpers (distances, mixing); only memory matters there.
_LA_BLOCK: Final[int] = 65536
#: Blocks for the weighted (argsort-based) median / trimmed mean.
_WEIGHTED_BLOCK: Final[int] = 8192


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------


def _as_stack(stack: ArrayLike, name: str = "stack") -> F32:
    """Return ``stack`` as a C-contiguous float32 ``(k, d)`` array (no copy when it already is one)."""
    arr = np.asarray(stack)
    if arr.dtype.kind not in "fiu":
        raise AggregationError(f"{name} must be a float array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise AggregationError(f"{name} must be 2-D (k, d), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise AggregationError(f"{name} is empty: at least one row is needed")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _as_vector(vec: ArrayLike, d: int, name: str) -> F32:
    arr = np.asarray(vec)
    if arr.dtype.kind not in "fiu":
        raise AggregationError(f"{name} must be a float array, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != d:
        raise AggregationError(f"{name} must have shape ({d},), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _as_weights(weights: ArrayLike | None, k: int) -> F64 | None:
    """Validate weights: shape ``(k,)``, finite, non-negative, not all zero."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != k:
        raise AggregationError(f"weights must have shape ({k},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise AggregationError("weights must be finite")
    if np.any(w < 0):
        raise AggregationError("weights must be non-negative")
    if not np.any(w > 0):
        raise AggregationError("weights are all zero: nothing to aggregate")
    return w


def _drop_zero_rows(stack: F32, w: F64 | None) -> tuple[F32, F64 | None]:
    """Drop zero-weight rows; return ``None`` weights when the remaining ones are all equal."""
    if w is None:
        return stack, None
    keep = w > 0
    if not np.all(keep):
        stack = np.ascontiguousarray(stack[keep])
        w = w[keep]
    if np.all(w == w[0]):
        return stack, None
    return stack, w


def _check_int(value: int, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AggregationError(f"{name} must be an integer, got {value!r}")
    if value < lo:
        raise AggregationError(f"{name} must be >= {lo}, got {value}")
    return int(value)


# --------------------------------------------------------------------------------------------------
# Sorting-network kernel
# --------------------------------------------------------------------------------------------------


def _batcher_network(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sort for ``n`` wires as standard comparators ``(lo, hi)``.

    Built for the next power of two and cut to ``n`` wires: the missing wires act as ``+inf`` on top,
    which a standard comparator never moves, so dropping every comparator that touches them is exact.
    """
    size = 1
    while size < n:
        size *= 2
    net: list[tuple[int, int]] = []
    p = 1
    while p < size:
        step = p
        while step >= 1:
            for j in range(step % p, size - step, 2 * step):
                for i in range(min(step, size - j - step)):
                    a, b = i + j, i + j + step
                    if a // (2 * p) == b // (2 * p) and b < n:
                        net.append((a, b))
            step //= 2
        p *= 2
    return net


@dataclass(frozen=True)
class _Program:
    """A pruned network compiled to buffer operations.

    Buffers ``0..k-1`` are read-only views of the input rows; ``k..k+n_scratch-1`` are scratch rows.
    Each op is ``(is_max, a, b, dst)``: ``dst = max(a, b)`` or ``min(a, b)``. ``outputs[i]`` is the
    buffer that holds the ``i``-th requested order statistic when the program ends.
    """

    ops: tuple[tuple[bool, int, int, int], ...]
    n_scratch: int
    outputs: tuple[int, ...]


@lru_cache(maxsize=256)
def _program(k: int, wanted: tuple[int, ...]) -> _Program:
    """Compile the sorting network for ``k`` rows, keeping only what reaches the ``wanted`` ranks."""
    # Backward liveness: a comparator survives if either output is live; each output is computed only
    # if it is live, so many comparators shrink to a single min or max.
    live = set(wanted)
    kept: list[tuple[int, int, bool, bool]] = []
    for a, b in reversed(_batcher_network(k)):
        need_lo, need_hi = a in live, b in live
        if need_lo or need_hi:
            kept.append((a, b, need_lo, need_hi))
            live.update((a, b))
    kept.reverse()
    wire = list(range(k))  # wire -> buffer currently holding it
    free: list[int] = []
    n_scratch = 0
    ops: list[tuple[bool, int, int, int]] = []

    def alloc() -> int:
        nonlocal n_scratch
        if free:
            return free.pop()
        n_scratch += 1
        return k + n_scratch - 1

    # Results are written in place over a scratch source whenever that source is dead afterwards, so
    # the working set stays near k + 1 rows of one block (it has to fit in L2).
    for a, b, need_lo, need_hi in kept:
        src_a, src_b = wire[a], wire[b]
        if need_lo and need_hi:
            dst_lo = alloc()
            ops.append((False, src_a, src_b, dst_lo))
            dst_hi = src_b if src_b >= k else (src_a if src_a >= k else alloc())
            ops.append((True, src_a, src_b, dst_hi))
        elif need_lo:
            dst_lo = src_a if src_a >= k else (src_b if src_b >= k else alloc())
            dst_hi = -1
            ops.append((False, src_a, src_b, dst_lo))
        else:
            dst_hi = src_b if src_b >= k else (src_a if src_a >= k else alloc())
            dst_lo = -1
            ops.append((True, src_a, src_b, dst_hi))
        wire[a], wire[b] = dst_lo, dst_hi
        free.extend(x for x in {src_a, src_b} if x >= k and x not in (dst_lo, dst_hi))
    return _Program(tuple(ops), n_scratch, tuple(wire[r] for r in wanted))


Emit = Callable[[int, int, list[F32]], None]


def _order_statistics_blocked(stack: F32, wanted: tuple[int, ...], emit: Emit, block: int) -> None:
    """Compute the ``wanted`` order statistics (ranks along axis 0) block by block.

    For every column block ``[s, e)`` call ``emit(s, e, rows)`` where ``rows[i]`` is the ``(e-s,)``
    vector of rank ``wanted[i]``. The views are only valid during the call.
    """
    k, d = stack.shape
    if k <= _NETWORK_MAX_K:
        prog = _program(k, wanted)
        scratch = np.empty((prog.n_scratch, min(block, max(d, 1))), dtype=np.float32)
        minimum, maximum = np.minimum, np.maximum
        for s in range(0, d, block):
            e = min(s + block, d)
            width = e - s
            bufs = [stack[i, s:e] for i in range(k)]
            bufs.extend(scratch[j, :width] for j in range(prog.n_scratch))
            for is_max, a, b, dst in prog.ops:
                (maximum if is_max else minimum)(bufs[a], bufs[b], out=bufs[dst])
            emit(s, e, [bufs[o] for o in prog.outputs])
        return
    contiguous = list(wanted) == list(range(wanted[0], wanted[-1] + 1)) and len(wanted) > 2
    for s in range(0, d, block):
        e = min(s + block, d)
        part = np.sort(stack[:, s:e], axis=0) if contiguous else np.partition(stack[:, s:e], wanted, axis=0)
        emit(s, e, [part[r] for r in wanted])


# --------------------------------------------------------------------------------------------------
# Coordinate-wise rules
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Distance-based rules
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Pre-steps
# --------------------------------------------------------------------------------------------------


def nearest_neighbour_mixing(stack: ArrayLike, f: int) -> F32:
    """Nearest-neighbour mixing (Allouah et al. 2023): replace each row by the mean of its ``k - f``
    nearest rows (itself included). Composed with median, trimmed mean, Krum or the geometric median it
    gives those rules the optimal robustness constant against ``f < k/2`` bad rows. Returns a new
    ``(k, d)`` stack; ties in distance go to the lower index.
    """
    x = _as_stack(stack)
    k, d = x.shape
    f = _check_int(f, "f", 0)
    if f >= k:
        raise AggregationError(f"nearest-neighbour mixing needs f < k, got f={f}, k={k}")
    if f == 0:
        mix = np.full((k, k), 1.0 / k, dtype=np.float32)
    else:
        dist = _pairwise_sq_dists(x)
        np.fill_diagonal(dist, -1.0)  # a row is always its own nearest neighbour
        nearest = np.argsort(dist, axis=1, kind="stable")[:, : k - f]
        mix = np.zeros((k, k), dtype=np.float32)
        np.put_along_axis(mix, nearest, np.float32(1.0 / (k - f)), axis=1)
    out = np.empty_like(x)
    for s in range(0, d, _LA_BLOCK):
        np.matmul(mix, x[:, s : s + _LA_BLOCK], out=out[:, s : s + _LA_BLOCK])
    return out


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


# --------------------------------------------------------------------------------------------------
# The peer's pipeline
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AggregationConfig:
    """How a peer aggregates; validated at construction (``AggregationError`` names the bad field).

    Pipeline run by :func:`aggregate`: (1) self-centred clipping: clip each neighbour's difference from
    the peer's own model to norm ``self_clip_tau`` if set, else (scale-free, needs no knowledge of the
    model's scale) to ``self_clip_scale`` times the median neighbour distance from the own model, else
    not at all; (2) put the own model in the stack as row 0 with weight
    ``own_weight`` (it is the trusted root); (3) drop zero-weight rows; (4) if ``nnm``, nearest-neighbour
    mixing with ``f``; (5) the ``rule``. ``f`` is an upper bound: with few rows it is lowered to the
    largest value the step accepts (Krum: ``k >= 2f+3``; NNM: ``f < k/2``) instead of failing, because a
    peer must keep learning while neighbours come and go. Defaults come from the attack simulation in
    docs/aggregation.md.
    """

    rule: str = DEFAULT_RULE
    beta: float = 0.2
    f: int = 4
    m: int | None = None
    tau: float = 1.0
    cclip_iters: int = 3
    nnm: bool = True
    self_clip_tau: float | None = None
    self_clip_scale: float | None = 1.0
    own_weight: float = 1.0
    gm_eps: float = 1e-8
    gm_tol: float = 1e-6
    gm_max_iter: int = 100

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise AggregationError(f"rule: unknown rule {self.rule!r}; choose one of {', '.join(RULES)}")
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float) or not 0 <= self.beta < 0.5:
            raise AggregationError(f"beta: must be in [0, 0.5), got {self.beta!r}")
        for name, lo in (("f", 0), ("cclip_iters", 1), ("gm_max_iter", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise AggregationError(f"{name}: must be an integer >= {lo}, got {value!r}")
        if self.m is not None and (isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 1):
            raise AggregationError(f"m: must be None or an integer >= 1, got {self.m!r}")
        for name in ("tau", "gm_eps"):
            if not _positive_finite(getattr(self, name)):
                raise AggregationError(
                    f"{name}: must be a positive finite number, got {getattr(self, name)!r}"
                )
        if self.self_clip_tau is not None and not _positive_finite(self.self_clip_tau):
            raise AggregationError(
                f"self_clip_tau: must be None or positive and finite, got {self.self_clip_tau!r}"
            )
        if self.self_clip_scale is not None and not _positive_finite(self.self_clip_scale):
            raise AggregationError(
                f"self_clip_scale: must be None or positive and finite, got {self.self_clip_scale!r}"
            )
        if not _positive_finite(self.own_weight):
            raise AggregationError(f"own_weight: must be positive and finite, got {self.own_weight!r}")
        if (
            isinstance(self.gm_tol, bool)
            or not isinstance(self.gm_tol, int | float)
            or not (0 <= self.gm_tol < math.inf)
        ):
            raise AggregationError(f"gm_tol: must be a non-negative finite number, got {self.gm_tol!r}")


def _positive_finite(value: object) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def aggregate(
    config: AggregationConfig,
    own: ArrayLike,
    neighbours: ArrayLike,
    weights: ArrayLike | None = None,
) -> F32:
    """Mix the peer's own model ``(d,)`` with its neighbours' ``(k, d)`` through ``config``'s pipeline.

    ``weights`` (one per neighbour, e.g. ``ContributionScorer.weights_for``) are applied after the own
    row, which gets ``config.own_weight``; neighbours of weight 0 are left out entirely (also of NNM).
    With no neighbours (``k = 0``, or all of weight 0) the own model is returned. See
    :class:`AggregationConfig` for the steps.
    """
    own_v = np.asarray(own)
    if own_v.ndim != 1:
        raise AggregationError(f"own must be 1-D (d,), got shape {own_v.shape}")
    d = own_v.shape[0]
    own_v = _as_vector(own_v, d, "own")
    nb = np.asarray(neighbours)
    if nb.ndim == 2 and nb.shape[0] == 0:
        return own_v.copy()
    nb = _as_stack(nb, "neighbours")
    k = nb.shape[0]
    if nb.shape[1] != d:
        raise AggregationError(f"neighbours have d={nb.shape[1]} but own has d={d}")
    if weights is not None:
        w_nb = np.asarray(weights, dtype=np.float64)
        if w_nb.ndim != 1 or w_nb.shape[0] != k:
            raise AggregationError(f"weights must have shape ({k},), got {w_nb.shape}")
        if not np.all(np.isfinite(w_nb)) or np.any(w_nb < 0):
            raise AggregationError("weights must be finite and non-negative")
        keep = w_nb > 0
        if not np.any(keep):
            return own_v.copy()
        nb, w_nb = nb[keep], w_nb[keep]
        w: F64 | None = np.concatenate(([config.own_weight], w_nb))
    else:
        w = None if config.own_weight == 1.0 else np.concatenate(([config.own_weight], np.ones(k)))
    if config.self_clip_tau is not None:
        nb = self_centred_clip(own_v, nb, config.self_clip_tau)
    elif config.self_clip_scale is not None:
        radius = config.self_clip_scale * float(np.median(np.sqrt(_sq_dists_to(nb, own_v))))
        if radius > 0:
            nb = self_centred_clip(own_v, nb, radius)
    x = np.empty((nb.shape[0] + 1, d), dtype=np.float32)
    x[0] = own_v
    x[1:] = nb
    n = x.shape[0]
    if w is not None and np.all(w == w[0]):
        w = None
    if config.nnm and n > 1:
        f_nnm = min(config.f, (n - 1) // 2)
        if f_nnm > 0:
            x = nearest_neighbour_mixing(x, f_nnm)
    return _apply_rule(config, x, w, own_v)


def _apply_rule(config: AggregationConfig, x: F32, w: F64 | None, own: F32) -> F32:
    n = x.shape[0]
    rule = config.rule
    if rule == "mean":
        return mean(x, w)
    if rule == "median":
        return median(x, w)
    if rule == "trimmed-mean":
        return trimmed_mean(x, config.beta, w)
    if rule == "geomed":
        return geometric_median(x, w, eps=config.gm_eps, tol=config.gm_tol, max_iter=config.gm_max_iter)
    if rule == "cclip":
        return centered_clip(x, own, config.tau, config.cclip_iters, w)
    # Krum ignores weights (it selects rows), so only the zero-weight drop above applies.
    f = min(config.f, max_krum_f(n))
    if f < 0:  # fewer than 3 rows: nothing to select from robustly
        return median(x)
    if rule == "krum":
        return krum(x, f)
    m = None if config.m is None else min(config.m, n)
    return multi_krum(x, f, m)
