"""Evaluation shortcuts in the numpy learner are bit-identical to the training path's arithmetic."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.learner import Dataset, NumpySoftmaxLearner, _fraction, _mean


def _same(a: float, b: float) -> bool:
    """Equal bit for bit (NaN equals NaN: a poisoned model's loss must stay NaN, not become a number)."""
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 200),
    k=st.integers(2, 12),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4, 1e38]),
    special=st.sampled_from([None, float("inf"), float("-inf"), float("nan")]),
)
def test_softmax_loss_is_softmax_xent_loss(
    seed: int, n: int, k: int, scale: float, special: float | None
) -> None:
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):  # scale 1e38 overflows float32 to inf on purpose
        logits = (rng.standard_normal((n, k)) * scale).astype(np.float32)
    if special is not None:
        logits[rng.integers(0, n), rng.integers(0, k)] = special
    y = rng.integers(0, k, n)
    with np.errstate(all="ignore"):
        want, _ = NumpySoftmaxLearner._softmax_xent(logits.copy(), y)
        got = NumpySoftmaxLearner._softmax_loss(logits.copy(), y)
    assert _same(got, want)


@settings(max_examples=30, deadline=None)
@given(hidden=st.sampled_from([0, 5]), seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 1e3]))
def test_evaluate_matches_the_training_loss_arithmetic(hidden: int, seed: int, scale: float) -> None:
    """``evaluate`` reports exactly the loss the gradient path would compute on the same split."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((60, 7)).astype(np.float32)
    y = rng.integers(0, 4, 60)
    learner = NumpySoftmaxLearner(
        Dataset(x[:40], y[:40]), Dataset(x[40:], y[40:]), 4, hidden=hidden, seed=seed
    )
    learner.train(4)
    params = {key: v * np.float32(scale) for key, v in learner.get_params().items()}
    with np.errstate(all="ignore"):
        logits, _ = learner._forward(params, x[40:])
        want, _ = learner._softmax_xent(logits, y[40:])
        got = learner.evaluate(params)
    assert _same(got.loss, want)
    assert got.accuracy == float((logits.argmax(axis=1) == y[40:]).mean())


floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(floats32, min_size=1, max_size=300), wide=st.booleans())
def test_mean_is_numpy_mean_bit_for_bit(values: list[float], wide: bool) -> None:
    arr = np.asarray(values, np.float64 if wide else np.float32)
    with np.errstate(all="ignore"):
        want = float(arr.mean())
        got = _mean(arr)
    assert _same(got, want)


@settings(max_examples=200, deadline=None)
@given(hits=st.lists(st.booleans(), min_size=1, max_size=10_000))
def test_fraction_is_numpy_mean_bit_for_bit(hits: list[bool]) -> None:
    arr = np.asarray(hits, np.bool_)
    got = _fraction(arr)
    assert type(got) is float
    assert got == float(arr.mean())
