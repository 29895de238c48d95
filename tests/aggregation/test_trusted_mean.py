"""The trusted mean (issue 16): the mean where it agrees with the geometric median, bounded around the
geometric median where a crowd drags it away. Adversarial: a majority of far rows, rows inside the spread."""

from __future__ import annotations

import numpy as np
import pytest

from p2pfl.aggregation import AggregationConfig, aggregate, geometric_median, mean
from p2pfl.aggregation.trusted_mean import trusted_mean
from p2pfl.errors import AggregationError, ConfigError


def _honest(rng: np.random.Generator, k: int, d: int = 50) -> np.ndarray:
    return rng.normal(size=(k, d)).astype(np.float32)


def test_rows_that_agree_get_their_mean() -> None:
    x = _honest(np.random.default_rng(0), 7)
    np.testing.assert_array_equal(trusted_mean(x), mean(x))


def test_a_far_crowd_moves_it_at_most_kappa_spreads_from_the_geometric_median() -> None:
    rng = np.random.default_rng(1)
    honest = _honest(rng, 5)
    far = 40.0 + rng.normal(size=(4, 50)).astype(np.float32)  # 4 of 9 rows, in one direction
    x = np.vstack([honest, far])
    g = geometric_median(x)
    spread = float(np.median(np.linalg.norm(x - g, axis=1)))
    out = trusted_mean(x, kappa=0.5)
    assert np.linalg.norm(out - g) <= 0.5 * spread * (1 + 1e-5)
    # the plain mean follows the crowd a long way
    assert np.linalg.norm(mean(x) - honest.mean(axis=0)) > 3 * np.linalg.norm(out - honest.mean(axis=0))


def test_kappa_zero_is_the_geometric_median_and_weights_count() -> None:
    rng = np.random.default_rng(2)
    x = _honest(rng, 6)
    np.testing.assert_allclose(trusted_mean(x, kappa=0.0), geometric_median(x), atol=1e-6)
    w = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(trusted_mean(x, w, kappa=100.0), mean(x[:5]))


@pytest.mark.parametrize("kappa", [-0.1, float("inf"), float("nan")])
def test_bad_kappa_is_refused(kappa: float) -> None:
    with pytest.raises(AggregationError):
        trusted_mean(np.zeros((2, 3), np.float32), kappa=kappa)
    with pytest.raises(ConfigError):
        AggregationConfig(rule="trusted-mean", trust_kappa=kappa)


def test_in_the_pipeline_it_runs_after_self_clipping_without_nnm() -> None:
    cfg = AggregationConfig(rule="trusted-mean")
    assert not cfg.uses_nnm(20)
    rng = np.random.default_rng(4)
    own = rng.normal(size=30).astype(np.float32)
    nb = own + 0.1 * rng.normal(size=(6, 30)).astype(np.float32)
    out = aggregate(cfg, own, nb)
    np.testing.assert_allclose(out, aggregate(AggregationConfig(rule="mean", nnm=False), own, nb), atol=1e-6)


def test_finite_rows_near_the_float32_limit_give_a_finite_result() -> None:
    """Two of five rows at 3e38 overflow the float32 sum of the mean; the geometric median stays finite and
    so must the trusted mean (it was NaN: ``inf * 0`` in the move towards the mean)."""
    x = np.array([[0.0], [0.1], [0.2], [3.0e38], [3.0e38]], dtype=np.float32)
    g = geometric_median(x)
    assert np.all(np.isfinite(g))
    for kappa in (0.0, 0.5, 1e6):
        out = trusted_mean(x, kappa=kappa)
        assert np.all(np.isfinite(out)), (kappa, out)
    out = trusted_mean(x, np.array([1.0, 2.0, 1.0, 1.0, 1.0]), kappa=0.5)
    assert np.all(np.isfinite(out))
