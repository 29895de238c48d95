"""Input validation shared by every rule: stacks, vectors, weights and integer parameters.

Everything is converted once to C-contiguous ``float32`` here, so the rules can assume it; every problem
is an :class:`~p2pfl.errors.AggregationError` naming the argument.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from p2pfl.errors import AggregationError

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


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


def _positive_weights(weights: ArrayLike | None, k: int) -> F64 | None:
    """Weights of a pre-step that runs after zero-weight rows were dropped: ``(k,)``, finite, all positive."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise AggregationError(f"weights must be {k} positive finite numbers")
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
