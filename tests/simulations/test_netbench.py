"""benchmarks/netbench: the workload's data without importing scikit-learn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from netbench import workload as wl  # noqa: E402

sklearn_datasets = pytest.importorskip("sklearn.datasets")
sklearn_split = pytest.importorskip("sklearn.model_selection")


def test_digits_are_scikit_learns() -> None:
    d = sklearn_datasets.load_digits()
    data, target = wl.digits()
    assert np.array_equal(data, d.data) and data.dtype == d.data.dtype
    assert np.array_equal(target, d.target)


def test_the_workload_split_is_train_test_splits() -> None:
    """The exact arrays of the workload's documented split (80/20, stratified, random_state 0)."""
    d = sklearn_datasets.load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = sklearn_split.train_test_split(
        x, y, test_size=wl.TEST_SIZE, stratify=y, random_state=wl.SPLIT_SEED
    )
    w = wl.load_workload(16)
    assert np.array_equal(w.test.x, x_te) and np.array_equal(w.test.y, y_te)
    perm = np.random.default_rng(wl.SPLIT_SEED).permutation(len(y_tr))
    for share, part in zip(w.shares, np.array_split(perm, 16), strict=True):
        assert np.array_equal(share.x, x_tr[np.sort(part)]) and np.array_equal(share.y, y_tr[np.sort(part)])


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(2, 40), min_size=2, max_size=7),
    test_size=st.sampled_from([0.1, 0.2, 0.25, 0.33, 0.5]),
    seed=st.integers(0, 2**31 - 1),
)
def test_stratified_split_matches_scikit_learn(counts: list[int], test_size: float, seed: int) -> None:
    """Uneven classes and remainders that tie (where the random tie-break draws): the same indices."""
    y = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    y = y[np.random.default_rng(seed).permutation(len(y))]
    n = len(y)
    idx = np.arange(n)
    try:
        tr, te = sklearn_split.train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
    except ValueError:  # fewer test or train samples than classes: not a split the workload makes
        return
    mine_tr, mine_te = wl.stratified_split(y, test_size, seed)
    assert np.array_equal(mine_tr, tr) and np.array_equal(mine_te, te)


def test_loading_the_workload_does_not_import_scikit_learn() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from netbench import workload as wl; "
        "wl.load_workload(16); print(any(m == 'sklearn' or m.startswith('sklearn.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(BENCH)], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False"
