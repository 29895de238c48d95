"""Issue 17's workload, built in code: the data every side trains on, the p2pfl scenario, a FedAvg reference.

scikit-learn digits, X/16, an 80/20 stratified split (``random_state=0``: 1,437 train / 360 test), the
training split IID over N peers (one seeded permutation cut in N near-equal parts); an MLP 64-32-10 with the
same initial weights everywhere, 1 local epoch of SGD (lr 0.1, momentum 0.9, batch 16) per round, 5 rounds,
mean aggregation; every peer is evaluated on the same 360 held-out samples.

p2pfl's peers train :class:`p2pfl.learner.NumpySoftmaxLearner` (``hidden=32``): the same network and the
same update (``v = m v + g; w -= lr v``, mean cross-entropy over the batch) as ``torch.optim.SGD`` on a
``torch.nn`` MLP; its initial weights are copied into the Flower side's torch module, so both start from the
same point. A peer's validation split (what scoring and the mix guard evaluate on) is its own training
share: Flower's clients train on all of their share, so p2pfl's do too.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from p2pfl.learner import Dataset, NumpySoftmaxLearner
from p2pfl.sim.data import Split
from p2pfl.sim.scenario import Scenario, parse_scenario

HIDDEN = 32
LR = 0.1
MOMENTUM = 0.9
BATCH = 16
ROUNDS = 5
TEST_SIZE = 0.2
SPLIT_SEED = 0
#: the degree of the random-regular graph above ``COMPLETE_UP_TO`` peers (issue 17: 6-8)
DEGREE = 8
COMPLETE_UP_TO = 16


@dataclass(frozen=True)
class Workload:
    """The data of one run: each peer's training share and the shared test set."""

    shares: list[Dataset]
    test: Dataset
    n_classes: int
    n_features: int

    @property
    def local_steps(self) -> int:
        """One local epoch of the largest share (the shares differ by at most one sample)."""
        return math.ceil(max(len(s) for s in self.shares) / BATCH)

    def splits(self) -> list[Split]:
        """The simulation's per-peer splits: train = validation = the peer's share, test = the 360."""
        return [Split(s, s, self.test, self.n_classes, self.n_features) for s in self.shares]


def load_workload(peers: int) -> Workload:
    """The workload's data, without importing scikit-learn (module docstring of :func:`digits`)."""
    data, target = digits()
    x = (data / 16.0).astype(np.float32)
    y = target.astype(np.int64)
    train, test = stratified_split(y, TEST_SIZE, SPLIT_SEED)
    x_tr, x_te, y_tr, y_te = x[train], x[test], y[train], y[test]
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y_tr))
    shares = [Dataset(x_tr[np.sort(p)], y_tr[np.sort(p)]) for p in np.array_split(perm, peers)]
    return Workload(shares, Dataset(x_te, y_te), 10, x.shape[1])


def digits() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """scikit-learn's digits (``load_digits().data, .target``), read from the file scikit-learn ships
    (``sklearn/datasets/data/digits.csv.gz``) without importing scikit-learn: its import is ~1.1 s of CPU
    (3 s of wall on the loaded 2-core machine) that each side's process paid before its first round."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the workload needs scikit-learn's digits: pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    raw = np.loadtxt(path, delimiter=",")
    return raw[:, :-1], raw[:, -1].astype(np.int64)


def stratified_split(
    y: npt.NDArray[np.int64], test_size: float, seed: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The (train, test) indices of ``sklearn.model_selection.train_test_split(..., test_size=test_size,
    stratify=y, random_state=seed)``: its ``StratifiedShuffleSplit`` step by step, drawing from the same
    ``RandomState(seed)`` in the same order (tests/simulations/test_netbench.py compares the two)."""
    n = len(y)
    n_test = math.ceil(test_size * n)
    n_train = math.floor((1.0 - test_size) * n)
    _, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(class_counts)):
        perm = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(perm[: n_i[i]])
        test.extend(perm[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(
    class_counts: npt.NDArray[np.int64], n_draws: int, rng: np.random.RandomState
) -> npt.NDArray[np.int64]:
    """``sklearn.utils.extmath._approximate_mode``: per class, its share of ``n_draws`` rounded down, the
    rest given to the largest remainders (ties broken by ``rng``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add = min(len(inds), need)
            floored[rng.choice(inds, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
    return floored.astype(int)


def topology(peers: int, degree: int | None = None) -> dict[str, Any]:
    """Complete up to 16 peers; above, a random-regular graph of degree 8 (issue 17: 6-8). ``degree``: a
    random-regular overlay of that degree instead (``peers - 1``: complete)."""
    if degree is not None:
        if degree >= peers - 1:
            return {"peers": peers, "kind": "complete"}
        return {"peers": peers, "kind": "random-regular", "degree": degree}
    if peers <= COMPLETE_UP_TO:
        return {"peers": peers, "kind": "complete"}
    return {"peers": peers, "kind": "random-regular", "degree": min(DEGREE, peers - 1)}


#: The FedAvg-like configuration the benchmark runs p2pfl in (docs/benchmarks.md, "bench_network"): the
#: workload's mean rule with no robust pre-processing (no self-centred clipping, no nearest-neighbour
#: mixing), no contribution scoring (all peers are honest and the mean is not robust anyway), and a round
#: that mixes only once every connected neighbour's version of that round is in (``wait_fraction = 1``).
FEDAVG_AGGREGATION: dict[str, Any] = {"rule": "mean", "nnm": False, "self_clip_scale": None}
FEDAVG_SCORING: dict[str, Any] = {"enabled": False}


def scenario(
    peers: int, *, transport: str, rounds: int = ROUNDS, local_steps: int = 1, degree: int | None = None
) -> Scenario:
    """The p2pfl scenario of the workload (its ``[data]`` is unused: the splits are passed in)."""
    return parse_scenario(
        {
            "run": {
                "seed": 0,
                "rounds": rounds,
                "transport": transport,
                "time_limit_s": 900,
                "wait_fraction": 1.0,
                "wait_before_mix": True,
                "max_round_wait_s": 10.0,
                "network_id": "bench17",
            },
            "data": {"dataset": "digits", "partition": "iid"},
            "model": {
                "kind": "mlp",
                "hidden": HIDDEN,
                "lr": LR,
                "momentum": MOMENTUM,
                "batch_size": BATCH,
                "local_steps": local_steps,
            },
            "topology": topology(peers, degree),
            "aggregation": dict(FEDAVG_AGGREGATION),
            "scoring": dict(FEDAVG_SCORING),
        },
        name=f"bench_network-{peers}",
    )


def initial_params(w: Workload) -> dict[str, np.ndarray]:
    """The initial model every p2pfl peer starts from (seed-independent in NumpySoftmaxLearner)."""
    return NumpySoftmaxLearner(w.shares[0], w.shares[0], w.n_classes, hidden=HIDDEN).get_params()


def fedavg_reference(w: Workload, rounds: int = ROUNDS, *, reset_momentum: bool = True) -> list[float]:
    """Plain FedAvg with p2pfl's own learner (sample-weighted mean of all peers' trained models each round):
    the accuracy on the test set after each round. What gossip on a complete graph should reproduce.
    ``reset_momentum``: each round starts with zero momentum, as a Flower client that builds its optimiser
    in each round's ``fit`` does."""
    learners = [
        NumpySoftmaxLearner(
            s, s, w.n_classes, hidden=HIDDEN, lr=LR, momentum=MOMENTUM, batch_size=BATCH, seed=i
        )
        for i, s in enumerate(w.shares)
    ]
    glob = learners[0].get_params()
    accs = []
    sizes = np.array([len(s) for s in w.shares], np.float64)
    for _ in range(rounds):
        trained = []
        for lr_ in learners:
            lr_.set_params(glob)
            if reset_momentum:
                lr_._velocity = {k: np.zeros_like(v) for k, v in glob.items()}
            lr_.train(w.local_steps)
            trained.append(lr_.get_params())
        glob = {
            k: (np.tensordot(sizes / sizes.sum(), np.stack([t[k] for t in trained]), axes=1)).astype(
                np.float32
            )
            for k in glob
        }
        accs.append(float(learners[0].evaluate_on(w.test, glob).accuracy or 0.0))
    return accs
