"""The generated datasets: ``synthetic`` unchanged, ``synthetic_hard`` shaped, seeded, offline and hard."""

from __future__ import annotations

import hashlib
import socket

import numpy as np
import pytest

from p2pfl.learner import Dataset, NumpySoftmaxLearner
from p2pfl.sim.data import load, peer_splits, synthetic_hard
from p2pfl.sim.scenario import parse_scenario


def _digest(x: np.ndarray, y: np.ndarray) -> str:
    return hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()


def test_existing_synthetic_output_is_unchanged() -> None:
    # digests of the ``synthetic`` set as generated before ``synthetic_hard`` existed
    x, y, c = load("synthetic", 0, samples=50)
    assert c == 5
    assert _digest(x, y) == "6e37c83c354269c4ecf29ceeb0fcf1ebabfdbda8f2ed5915c43233160449d28a"
    x, y, _ = load("synthetic", 7, samples=1000)
    assert _digest(x, y) == "cafe161704b3b4bb18f520b143b1db72f016447dcdd528e44f3c3dd550f06ee3"


def test_synthetic_hard_shape_and_ranges() -> None:
    x, y, c = load("synthetic_hard", 0, samples=3000)
    assert (x.shape, x.dtype, y.shape, y.dtype, c) == ((3000, 48), np.float32, (3000,), np.int64, 10)
    assert np.isfinite(x).all()
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-3)
    counts = np.bincount(y, minlength=10)
    assert counts.min() > 0.5 * 3000 / 10  # every class well represented


def test_synthetic_hard_is_determined_by_the_seed() -> None:
    a, b = synthetic_hard(500, 3), synthetic_hard(500, 3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    other = synthetic_hard(500, 4)
    assert not np.array_equal(a[0], other[0])


def test_synthetic_hard_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("synthetic_hard must not open a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    x, _, _ = load("synthetic_hard", 1, samples=200)
    assert len(x) == 200


def test_synthetic_hard_is_not_linearly_separable() -> None:
    # softmax regression, trained to convergence on 4,000 records, stays far below a separable task's ~100 %
    x, y, c = synthetic_hard(5000, 0)
    train, test = Dataset(x[:4000], y[:4000]), Dataset(x[4000:], y[4000:])
    learner = NumpySoftmaxLearner(train, test, c, lr=0.05, batch_size=64, seed=0)
    learner.train(600)  # ~10 epochs
    acc = learner.evaluate().accuracy
    assert acc is not None and 0.2 < acc < 0.7


def test_scenario_splits_synthetic_hard_among_8_peers() -> None:
    # 8.5 % of the samples per peer (test 20 %, validation 15 %): 125,000 samples give >= 10,000 each
    data = {"dataset": "synthetic_hard", "partition": "iid", "synthetic_samples": 12_500}
    sc = parse_scenario({"data": data})
    assert sc.data.dataset == "synthetic_hard"
    splits = peer_splits("synthetic_hard", 8, partition_kind="iid", synthetic_samples=12_500, seed=3)
    assert min(len(s.train) for s in splits) >= 1_000
    assert splits[0].n_features == 48 and splits[0].n_classes == 10
