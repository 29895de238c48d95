"""Shared by the examples: each peer's private share of scikit-learn's bundled digits (nothing downloaded).

In a real deployment every peer loads its *own* data; here one process plays several peers, so the 1,797
digit images are shuffled once (fixed seed), a test split is held out, and the rest is dealt out among the
peers. Each peer splits its share into train and validation: the validation split is the peer's trusted data,
on which it scores its neighbours' models.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

import p2pfl

N_FEATURES = 64
N_CLASSES = 10


def peer_data(
    index: int, num_peers: int, seed: int = 0
) -> tuple[p2pfl.Dataset, p2pfl.Dataset, p2pfl.Dataset]:
    """(train, validation, shared test) of peer ``index`` of ``num_peers``: float32 features, int64 labels."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    test, pool = order[:300], order[300:]
    share = np.array_split(pool, num_peers)[index]
    n_val = len(share) // 5
    val, train = share[:n_val], share[n_val:]
    return (
        p2pfl.Dataset(x[train], y[train]),
        p2pfl.Dataset(x[val], y[val]),
        p2pfl.Dataset(x[test], y[test]),
    )
