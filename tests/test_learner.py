"""NumpySoftmaxLearner's proximal term (issue 16: a heterogeneity correction measured on sparse graphs)."""

from __future__ import annotations

import numpy as np
import pytest

from p2pfl.learner import Dataset, NumpySoftmaxLearner


def _learner(prox: float) -> NumpySoftmaxLearner:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)  # one-sided data: local steps drift far from the start
    data = Dataset(x, y)
    return NumpySoftmaxLearner(data, data, 2, hidden=4, lr=0.5, prox=prox, seed=3)


def _drift(learner: NumpySoftmaxLearner) -> float:
    start = learner.get_params()
    learner.train(30)
    after = learner.get_params()
    return float(np.sqrt(sum(np.sum((after[k] - start[k]) ** 2) for k in start)))


def test_prox_zero_is_plain_sgd_and_prox_keeps_local_steps_near_the_start() -> None:
    plain = NumpySoftmaxLearner(_learner(0.0).train_data, _learner(0.0).val_data, 2, hidden=4, lr=0.5, seed=3)
    a, b = _learner(0.0), plain
    a.train(5)
    b.train(5)
    assert all(np.array_equal(a.get_params()[k], b.get_params()[k]) for k in a.get_params())
    assert _drift(_learner(2.0)) < 0.8 * _drift(_learner(0.0))


@pytest.mark.parametrize("bad", [-0.1, float("inf"), float("nan")])
def test_prox_must_be_finite_and_non_negative(bad: float) -> None:
    with pytest.raises(ValueError, match="prox"):
        _learner(bad)
