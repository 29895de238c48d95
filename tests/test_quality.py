"""p2pfl.quality: the numpy fallback gives scikit-learn's numbers; edge cases stay defined."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, roc_auc_score

from p2pfl.learner import Dataset, NumpySoftmaxLearner, validation_scores
from p2pfl.quality import deltas, macro_auc, macro_f1, quality, sklearn_available


def _case(seed: int, n: int, c: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    if ties:
        logits = np.round(logits)  # many equal scores: the tie rule matters
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), y


def test_sklearn_is_installed_for_the_comparison() -> None:
    assert sklearn_available()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 80),
    c=st.integers(2, 6),
    ties=st.booleans(),
)
def test_numpy_fallback_matches_sklearn(seed: int, n: int, c: int, ties: bool) -> None:
    probs, y = _case(seed, n, c, ties)
    pred = probs.argmax(axis=1)
    assert macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)
    assert macro_f1(y, pred) == pytest.approx(macro_f1(y, pred, use_sklearn=True), abs=1e-12)
    np_auc, sk_auc = macro_auc(y, probs), macro_auc(y, probs, use_sklearn=True)
    assert (np_auc is None) == (sk_auc is None)
    if np_auc is not None:
        assert np_auc == pytest.approx(sk_auc, abs=1e-12)
    if c > 2 and len(np.unique(y)) == c:  # every class present: sklearn's own multiclass OvR macro AUC
        assert np_auc == pytest.approx(
            roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(c))), abs=1e-9
        )


def test_auc_leaves_out_classes_without_positives_and_is_none_with_one_class() -> None:
    probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    y = np.array([0, 1, 0, 1])  # class 2 absent
    assert macro_auc(y, probs) == pytest.approx(1.0)
    assert macro_auc(np.zeros(4, np.int64), probs) is None


def test_non_finite_probabilities_give_bad_numbers_not_errors() -> None:
    probs = np.full((4, 2), np.nan)
    q = quality(probs, np.array([0, 1, 0, 1]))
    assert q.samples == 4 and q.accuracy is not None and q.loss is not None and q.loss > 20


def test_empty_and_mismatched_inputs() -> None:
    assert quality(np.zeros((0, 3)), np.zeros(0, np.int64)).samples == 0
    with pytest.raises(ValueError):
        quality(np.zeros((3, 2)), np.zeros(2, np.int64))


def test_deltas_are_new_minus_base_where_both_are_defined() -> None:
    a = quality(*_case(1, 50, 3, False))
    b = quality(*_case(2, 50, 3, False))
    d = deltas(a, b)
    assert a.auc is not None and b.auc is not None and a.f1 is not None and b.f1 is not None
    assert d == {"delta_auc": pytest.approx(a.auc - b.auc), "delta_f1": pytest.approx(a.f1 - b.f1)}
    assert deltas(a, None) == {}


def test_numpy_learner_exposes_validation_probabilities() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    learner = NumpySoftmaxLearner(Dataset(x, y), Dataset(x, y), 2, seed=1)
    learner.train(50)
    scored = validation_scores(learner)
    assert scored is not None
    probs, labels = scored
    assert probs.shape == (40, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    q = quality(probs, labels)
    ev = learner.evaluate()
    assert q.accuracy == pytest.approx(ev.accuracy) and q.loss == pytest.approx(ev.loss, rel=1e-4)
    assert q.auc is not None and q.auc > 0.9
