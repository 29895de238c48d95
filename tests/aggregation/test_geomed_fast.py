"""``geometric_median``'s per-iteration fast path (one distance block, ``sqrt(v.dot(v))`` norms) returns
bit-for-bit what the plain iteration (blocked distances, ``np.linalg.norm``) returns."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import p2pfl.aggregation as agg
from p2pfl.aggregation._distances import _sq_dists_to
from p2pfl.aggregation._inputs import F32, _as_stack, _as_weights, _drop_zero_rows
from tests.strategies_agg import moderate_f32, stacks


def _reference(x_in: F32, weights: np.ndarray | None, eps: float, tol: float, max_iter: int) -> F32:
    """The smoothed Weiszfeld iteration as written before the fast path."""
    x = _as_stack(x_in)
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


def _same(a: F32, b: F32) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=150, deadline=None)
@given(
    stacks(max_k=9, max_d=8, elements=moderate_f32),
    st.sampled_from([1e-6, 1e-9, 0.0]),
    st.integers(1, 60),
)
def test_fast_iteration_is_bit_identical_to_the_plain_one(x: F32, tol: float, max_iter: int) -> None:
    with np.errstate(all="ignore"):
        got = agg.geometric_median(x, tol=tol, max_iter=max_iter)
        assert _same(got, _reference(x, None, 1e-8, tol, max_iter))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_fast_iteration_is_bit_identical_with_weights_and_model_sized_rows(data: st.DataObject) -> None:
    k = data.draw(st.integers(2, 9))
    d = data.draw(st.sampled_from([3, 105, 1000]))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(k, d)).astype(np.float32)
    x[-1] *= data.draw(st.sampled_from([1.0, -5.0, 1e3]))  # a sign-flipper / scaler among the rows
    w = data.draw(hnp.arrays(np.float64, k, elements=st.floats(0.0, 10.0)))
    if not w.sum() > 0:
        w[0] = 1.0
    got = agg.geometric_median(x, w)
    assert _same(got, _reference(x, w, 1e-8, 1e-6, 100))
    assert all(math.isfinite(v) for v in got.tolist())
