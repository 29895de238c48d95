"""Centralised references for a scenario's data: what the union of every peer's data allows in one place.

The gossip matrix (:mod:`simulations.bench_matrix`) compares honest peers' test accuracy with two models
trained centrally on the union of all peers' train and validation splits (the same partition, so the same
examples), evaluated on the same held-out test split the peers are evaluated on:

* ``logreg``: scikit-learn's multinomial logistic regression (L-BFGS, ``C = 1``), a strong linear baseline;
* ``model``: the scenario's own model (:func:`simulations.plan.build_learner`, same hyper-parameters and
  learning-rate schedule), trained for ``rounds`` calls of ``peers * local_steps`` steps: the number of SGD
  steps the whole network takes, spent on one model that sees all the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from p2pfl.learner import Dataset

from .data import Split
from .plan import build_learner, load_splits
from .scenario import Scenario


@dataclass(frozen=True)
class Reference:
    dataset: str
    logreg: float
    model: float
    train_examples: int
    test_examples: int

    @property
    def best(self) -> float:
        return max(self.logreg, self.model)


def union(splits: list[Split]) -> Split:
    """Every peer's train and validation examples in one training set (the test split is shared)."""
    xs = [s.train.x for s in splits] + [s.val.x for s in splits]
    ys = [s.train.y for s in splits] + [s.val.y for s in splits]
    first = splits[0]
    return Split(
        train=Dataset(np.concatenate(xs), np.concatenate(ys)),
        val=first.val,
        test=first.test,
        n_classes=first.n_classes,
        n_features=first.n_features,
    )


def logreg_accuracy(data: Split, seed: int = 0) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000, random_state=seed)
    clf.fit(data.train.x, data.train.y)
    return float(np.mean(clf.predict(data.test.x) == data.test.y))


def model_accuracy(scenario: Scenario, data: Split) -> float:
    learner = build_learner(scenario, data, index=0)
    steps = scenario.topology.peers * scenario.model.local_steps
    for _ in range(scenario.run.rounds):
        learner.train(steps)
    return float(learner.evaluate_on(data.test).accuracy)


def reference(scenario: Scenario) -> Reference:
    """Both references for ``scenario``'s data (its dataset, partition and seed; attackers' data included)."""
    data = union(load_splits(scenario)[: scenario.topology.peers])
    return Reference(
        dataset=scenario.data.dataset,
        logreg=logreg_accuracy(data, scenario.run.seed),
        model=model_accuracy(scenario, data),
        train_examples=len(data.train.y),
        test_examples=len(data.test.y),
    )
