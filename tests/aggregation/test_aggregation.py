"""Robust aggregators: exactness against numpy, properties, breakdown under attacks, the pipeline."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pfl import aggregation as agg
from p2pfl.errors import AggregationError, ConfigError
from tests.strategies_agg import clustered_with_outliers, honest_and_bad, permutations_of, stacks

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def np_median(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.median(x, axis=0)


def ref_trimmed_mean(x: np.ndarray, beta: float) -> np.ndarray:
    """numpy.mean(np.sort(x, 0)[t:k-t], 0) with the float32 sum taken row by row (numpy's axis-0 order)."""
    k = x.shape[0]
    t = math.floor(beta * k)
    kept = np.sort(x, axis=0)[t : k - t]
    with np.errstate(over="ignore", invalid="ignore"):
        acc = kept[0].copy()
        for row in kept[1:]:
            acc = acc + row
        return acc / np.float32(kept.shape[0])


# ------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("k", [*range(1, 34), 40, 63])
def test_median_is_bit_identical_to_numpy_median_for_every_k(k: int) -> None:
    rng = np.random.default_rng(k)
    x = rng.standard_normal((k, 1001)).astype(np.float32)
    x[:, :100] = rng.integers(-2, 3, size=(k, 100))  # many ties
    expected = np.median(x, axis=0)
    actual = agg.median(x, block=256)  # several blocks plus a ragged tail
    assert expected.dtype == actual.dtype
    assert np.array_equal(expected, actual)


@pytest.mark.parametrize("k", [2, 3, 4, 7, 8, 16, 31, 32, 33])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.2, 0.25, 0.3, 0.49])
def test_trimmed_mean_is_bit_identical_to_sorted_reference(k: int, beta: float) -> None:
    rng = np.random.default_rng(100 + k)
    x = (rng.standard_normal((k, 777)) * 1e3).astype(np.float32)
    assert np.array_equal(ref_trimmed_mean(x, beta), agg.trimmed_mean(x, beta, block=100))


def test_trimmed_mean_matches_numpy_mean_of_sorted_rows_for_wide_stacks() -> None:
    x = np.random.default_rng(5).standard_normal((16, 5000)).astype(np.float32)
    expected = np.mean(np.sort(x, axis=0)[3:13], axis=0)
    assert np.array_equal(expected, agg.trimmed_mean(x, 0.2))


def test_median_of_two_huge_values_overflows_to_inf_exactly_like_numpy() -> None:
    x = np.array([[3e38, -3e38, 3.4028235e38], [3.2e38, -3.3e38, 1.0]], dtype=np.float32)
    expected = np_median(x)
    assert np.array_equal(expected, agg.median(x))
    assert [math.inf, -math.inf] == agg.median(x)[:2].tolist()


def test_median_propagates_nan_per_column_like_numpy() -> None:
    x = np.array([[1.0, 2.0], [np.nan, 3.0], [2.0, 4.0]], dtype=np.float32)
    expected = np_median(x)
    assert np.array_equal(expected, agg.median(x), equal_nan=True)


def test_median_of_single_row_is_that_row() -> None:
    x = np.array([[1.5, -2.0, 3e38]], dtype=np.float32)
    assert x[0].tolist() == agg.median(x).tolist()


def test_median_accepts_float64_and_non_contiguous_input() -> None:
    x64 = np.random.default_rng(1).standard_normal((9, 40))
    view = x64.T.copy().T  # Fortran-ordered
    expected = np.median(x64.astype(np.float32), axis=0)
    assert np.array_equal(expected, agg.median(view))


def test_mean_is_numpy_mean() -> None:
    x = np.random.default_rng(2).standard_normal((7, 300)).astype(np.float32)
    assert np.array_equal(np.mean(x, axis=0), agg.mean(x))


@given(stacks())
@PROPS
def test_median_equals_numpy_median_on_arbitrary_stacks(x: np.ndarray) -> None:
    assert np.array_equal(np_median(x), agg.median(x, block=3), equal_nan=True)


@given(stacks(max_k=12), st.sampled_from([0.1, 0.2, 0.3, 0.45]))
@PROPS
def test_trimmed_mean_equals_reference_on_arbitrary_stacks(x: np.ndarray, beta: float) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        expected = ref_trimmed_mean(x, beta)
        actual = agg.trimmed_mean(x, beta, block=2)
    assert np.array_equal(expected, actual, equal_nan=True)


# ------------------------------------------------------------------------------------- weights


def test_weighted_median_with_integer_weights_equals_median_of_repeated_rows() -> None:
    rng = np.random.default_rng(3)
    for trial in range(20):
        k = int(rng.integers(1, 9))
        x = rng.integers(-5, 6, size=(k, 50)).astype(np.float32) + rng.standard_normal((k, 50)).astype(
            np.float32
        )
        w = rng.integers(1, 4, size=k)
        expected = np.median(np.repeat(x, w, axis=0), axis=0)
        assert np.array_equal(expected, agg.median(x, w.astype(float))), trial


def test_zero_weight_rows_are_dropped_and_equal_weights_use_the_exact_path() -> None:
    x = np.random.default_rng(4).standard_normal((6, 30)).astype(np.float32)
    w = np.array([2.0, 0.0, 2.0, 2.0, 0.0, 2.0])
    kept = x[[0, 2, 3, 5]]
    assert np.array_equal(np.median(kept, axis=0), agg.median(x, w))
    assert np.array_equal(ref_trimmed_mean(kept, 0.25), agg.trimmed_mean(x, 0.25, w))
    assert np.array_equal(np.mean(kept, axis=0), agg.mean(x, w))


def test_weighted_mean_is_the_normalised_weighted_average() -> None:
    x = np.array([[0.0, 10.0], [4.0, 2.0]], dtype=np.float32)
    assert agg.mean(x, [1.0, 3.0]).tolist() == [3.0, 4.0]


def test_weighted_trimmed_mean_drops_extremes_then_weights_the_rest() -> None:
    x = np.array([[-100.0], [1.0], [2.0], [100.0]], dtype=np.float32)
    # t = floor(0.25 * 4) = 1 value trimmed each side; kept 1 (w=1) and 2 (w=3).
    assert agg.trimmed_mean(x, 0.25, [5.0, 1.0, 3.0, 5.0]).tolist() == [1.75]


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, -1.0, 1.0], "non-negative"),
        ([1.0, math.nan, 1.0], "finite"),
        ([0.0, 0.0, 0.0], "all zero"),
        ([1.0, 1.0], "shape"),
    ],
)
def test_bad_weights_raise_aggregation_error(weights: list[float], message: str) -> None:
    x = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(AggregationError, match=message):
        agg.median(x, weights)


# ------------------------------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    ("stack", "message"),
    [
        (np.zeros(4, dtype=np.float32), "2-D"),
        (np.zeros((2, 2, 2), dtype=np.float32), "2-D"),
        (np.zeros((0, 4), dtype=np.float32), "empty"),
        (np.array([["a", "b"]]), "float"),
    ],
)
def test_malformed_stacks_raise_aggregation_error(stack: np.ndarray, message: str) -> None:
    for fn in (agg.mean, agg.median, agg.geometric_median, lambda s: agg.trimmed_mean(s, 0.1)):
        with pytest.raises(AggregationError, match=message):
            fn(stack)


def test_krum_refuses_k_too_small_for_f() -> None:
    x = np.zeros((6, 3), dtype=np.float32)
    with pytest.raises(AggregationError, match=r"k >= 2f\+3 = 7"):
        agg.krum(x, 2)
    with pytest.raises(AggregationError, match="f must be"):
        agg.krum(x, -1)
    with pytest.raises(AggregationError, match="integer"):
        agg.multi_krum(x, True)  # type: ignore[arg-type]


@pytest.mark.parametrize("beta", [-0.1, 0.5, 0.7, math.nan])
def test_trimmed_mean_rejects_beta_outside_half_open_unit_half(beta: float) -> None:
    with pytest.raises(AggregationError, match="beta"):
        agg.trimmed_mean(np.zeros((4, 2), dtype=np.float32), beta)


# ------------------------------------------------------------------------------------- properties


@given(stacks(max_k=9), st.data())
@PROPS
def test_median_and_trimmed_mean_are_permutation_invariant(x: np.ndarray, data: st.DataObject) -> None:
    perm = data.draw(permutations_of(x.shape[0]))
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.array_equal(agg.median(x), agg.median(x[perm]), equal_nan=True)
        assert np.array_equal(agg.trimmed_mean(x, 0.2), agg.trimmed_mean(x[perm], 0.2), equal_nan=True)


@given(honest_and_bad())
@PROPS
def test_median_stays_within_honest_range_when_fewer_than_half_are_bad(case: tuple[np.ndarray, int]) -> None:
    x, b = case
    honest = x[: x.shape[0] - b]
    with np.errstate(over="ignore"):
        m = agg.median(x)
    assert np.all(m >= honest.min(axis=0))
    assert np.all(m <= honest.max(axis=0))


@given(honest_and_bad())
@PROPS
def test_trimmed_mean_stays_within_honest_range_when_trimming_covers_the_bad(
    case: tuple[np.ndarray, int],
) -> None:
    x, b = case
    k = x.shape[0]
    honest = x[: k - b]
    beta = min((b + 0.5) / k, 0.4999)
    if math.floor(beta * k) < b:  # cannot trim b rows with beta < 1/2
        return
    m = agg.trimmed_mean(x, beta)
    # numpy-exact float32 summation of the kept values rounds at each of its k steps; allow that much.
    tol = k * np.finfo(np.float32).eps * np.abs(honest).max(axis=0).astype(np.float64)
    assert np.all(m >= honest.min(axis=0) - tol)
    assert np.all(m <= honest.max(axis=0) + tol)


@given(clustered_with_outliers())
@PROPS
def test_krum_picks_an_honest_row_when_honest_rows_cluster(case: tuple[np.ndarray, int]) -> None:
    x, f = case
    chosen = agg.krum(x, f)
    honest = x[: x.shape[0] - f]
    assert any(np.array_equal(chosen, row) for row in honest)
    mk = agg.multi_krum(x, f, x.shape[0] - f)
    assert np.allclose(mk, honest.mean(axis=0), atol=1e-3 * (1 + np.abs(honest).max()))


def test_krum_matches_brute_force_reference() -> None:
    rng = np.random.default_rng(7)
    for _ in range(10):
        k, f = 9, 2
        x = rng.standard_normal((k, 20)).astype(np.float32) + 100.0
        x64 = x.astype(np.float64)
        d2 = ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
        scores = [np.sort(np.delete(d2[i], i))[: k - f - 2].sum() for i in range(k)]
        assert np.array_equal(x[int(np.argmin(scores))], agg.krum(x, f))
        best = np.sort(np.argsort(scores, kind="stable")[:4])
        assert np.array_equal(np.mean(x[best], axis=0), agg.multi_krum(x, f, 4))


def test_geometric_median_minimises_sum_of_distances() -> None:
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.standard_normal((7, 10)), rng.standard_normal((3, 10)) * 50 + 100]).astype(
        np.float32
    )
    z = agg.geometric_median(x, tol=1e-9, max_iter=1000)

    def cost(p: np.ndarray) -> float:
        return float(np.linalg.norm(x.astype(np.float64) - p, axis=1).sum())

    for candidate in (np.mean(x, axis=0), np.median(x, axis=0), *x):
        assert cost(z) <= cost(candidate) * (1 + 1e-5)
    assert float(np.linalg.norm(z - x[:7].mean(axis=0))) < 3.0


def test_geometric_median_in_one_dimension_is_the_median_for_odd_k() -> None:
    x = np.array([[0.0], [1.0], [2.0], [50.0], [-7.0]], dtype=np.float32)
    assert abs(agg.geometric_median(x, tol=1e-10, max_iter=2000)[0] - 1.0) < 1e-3


def test_centered_clip_moves_at_most_tau_per_iteration_and_is_the_mean_inside_the_ball() -> None:
    rng = np.random.default_rng(9)
    centre = np.zeros(5, dtype=np.float32)
    near = rng.uniform(-0.1, 0.1, size=(4, 5)).astype(np.float32)
    assert np.allclose(near.mean(axis=0), agg.centered_clip(near, centre, tau=10.0, iters=1), atol=1e-6)
    far = np.full((4, 5), 1e6, dtype=np.float32)
    out = agg.centered_clip(far, centre, tau=0.5, iters=3)
    assert float(np.linalg.norm(out)) <= 3 * 0.5 + 1e-4


def test_nearest_neighbour_mixing_averages_each_rows_k_minus_f_nearest() -> None:
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]], dtype=np.float32)
    mixed = agg.nearest_neighbour_mixing(x, 2)
    assert np.allclose([[1.0], [1.0], [1.0], [23 / 3], [23 / 3]], mixed, rtol=1e-6)
    assert np.allclose(np.broadcast_to(x.mean(axis=0), x.shape), agg.nearest_neighbour_mixing(x, 0))


def test_nearest_neighbour_mixing_refuses_f_not_below_k() -> None:
    with pytest.raises(AggregationError, match="f < k"):
        agg.nearest_neighbour_mixing(np.zeros((3, 2), dtype=np.float32), 3)


def test_self_centred_clip_bounds_each_difference_and_keeps_rows_inside_bit_for_bit() -> None:
    own = np.array([1.0, 1.0, 1.0], dtype=np.float32)
    x = np.array([[1.1, 0.9, 1.0], [101.0, 1.0, 1.0], [1.0, -299.0, 1.0]], dtype=np.float32)
    out = agg.self_centred_clip(own, x, tau=2.0)
    assert x[0].tolist() == out[0].tolist()
    assert out[1].tolist() == [3.0, 1.0, 1.0]
    assert out[2].tolist() == [1.0, -1.0, 1.0]
    assert x[1].tolist() == [101.0, 1.0, 1.0]  # input untouched


# ------------------------------------------------------------------------------------- breakdown

K_HONEST, N_BAD, DIM = 12, 4, 50


def _honest() -> np.ndarray:
    rng = np.random.default_rng(11)
    return (rng.normal(3.0, 1.0, size=DIM) + rng.normal(0.0, 1.0, size=(K_HONEST, DIM))).astype(np.float32)


def _attack(kind: str, honest: np.ndarray, scale: float) -> np.ndarray:
    rng = np.random.default_rng(12)
    mu, sd = honest.mean(axis=0), honest.std(axis=0)
    if kind == "signflip":
        bad = -scale * mu
    elif kind == "scaled":
        bad = mu + scale * (honest[0] - mu)
    elif kind == "gaussian":
        bad = mu + rng.normal(0.0, scale, size=DIM)
    elif kind == "alie":
        bad = mu - scale * sd
    elif kind == "ipm":
        bad = -scale * mu
    else:
        raise AssertionError(kind)
    return np.tile(bad, (N_BAD, 1)).astype(np.float32)


ROBUST = {
    "median": agg.median,
    "trimmed-mean": lambda x: agg.trimmed_mean(x, 0.25),
    "krum": lambda x: agg.krum(x, N_BAD),
    "multi-krum": lambda x: agg.multi_krum(x, N_BAD),
    "geomed": agg.geometric_median,
    "cclip": lambda x: agg.centered_clip(x, x[0], tau=5.0, iters=3),
    "nnm+median": lambda x: agg.median(agg.nearest_neighbour_mixing(x, N_BAD)),
    "selfclip+mean": lambda x: agg.mean(agg.self_centred_clip(x[0], x, tau=5.0)),
    "pipeline-default": lambda x: agg.aggregate(agg.AggregationConfig(f=N_BAD), x[0], x[1:]),
}


@pytest.mark.parametrize("kind", ["signflip", "scaled", "gaussian", "alie", "ipm"])
@pytest.mark.parametrize("rule", sorted(ROBUST))
def test_robust_rules_stay_bounded_while_the_mean_breaks(kind: str, rule: str) -> None:
    honest = _honest()
    mu = honest.mean(axis=0)
    radius = float(np.max(np.linalg.norm(honest - mu, axis=1)))
    for scale in (10.0, 1e3, 1e5):
        x = np.concatenate([honest, _attack(kind, honest, scale)])
        err = float(np.linalg.norm(ROBUST[rule](x) - mu))
        assert err <= 1.5 * radius, (scale, err, radius)
    mean_err = float(np.linalg.norm(agg.mean(np.concatenate([honest, _attack(kind, honest, 1e5)])) - mu))
    assert mean_err > 100 * radius


# ------------------------------------------------------------------------------------- pipeline


def test_config_defaults_are_valid_and_named_rules_exist() -> None:
    cfg = agg.AggregationConfig()
    assert cfg.rule in agg.RULES
    assert agg.RULES == (
        "mean",
        "median",
        "trimmed-mean",
        "krum",
        "multi-krum",
        "geomed",
        "cclip",
        "trusted-mean",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rule", "avg"),
        ("beta", 0.5),
        ("beta", -0.1),
        ("f", -1),
        ("f", 1.5),
        ("m", 0),
        ("tau", 0.0),
        ("tau", math.inf),
        ("cclip_iters", 0),
        ("self_clip_tau", -1.0),
        ("self_clip_scale", 0.0),
        ("own_weight", 0.0),
        ("gm_eps", math.nan),
        ("gm_tol", -1.0),
        ("gm_max_iter", 0),
        ("nnm", "yes"),
        ("nnm", 1),
    ],
)
def test_config_rejects_bad_field_naming_it(field: str, value: object) -> None:
    # A config value is a ConfigError like every other setting ([aggregation] is its TOML section);
    # AggregationError stays for inputs that are bad at aggregation time.
    with pytest.raises(ConfigError, match=rf"^\[aggregation\] {field}: ") as info:
        agg.AggregationConfig(**{field: value})  # type: ignore[arg-type]
    assert (info.value.section, info.value.key) == ("aggregation", field)
    assert not isinstance(info.value, AggregationError)


@pytest.mark.parametrize("rule", agg.RULES)
@pytest.mark.parametrize("k", [4, 6, 8, 15])
def test_nnm_auto_runs_before_coordinatewise_rules_and_geomed_on_enough_rows(rule: str, k: int) -> None:
    # issue 16: with f capped by few rows NNM multiplied the weight of a model near the centre under the
    # geometric median and cost it 5-6 points on a random 4-regular graph; the coordinate-wise rules need it.
    # k = 8 is a dumbbell clique member's mix (9 rows): NNM with f = 4 there cost 7-9 points
    rng = np.random.default_rng(7)
    own = rng.normal(size=6).astype(np.float32)
    nb = rng.normal(size=(k, 6)).astype(np.float32)
    auto = agg.AggregationConfig(rule=rule, nnm="auto")  # f = 4: geomed gets NNM from 13 rows
    want = rule in agg.NNM_RULES or (rule == "geomed" and k + 1 >= 13)
    assert auto.uses_nnm(k + 1) == want
    assert agg.NNM_RULES <= set(agg.RULES)
    same = agg.AggregationConfig(rule=rule, nnm=want, f=auto.nnm_f(k + 1) if want else 4)
    if rule not in ("krum", "multi-krum"):  # (Krum's own f is the configured one, not NNM's)
        assert agg.aggregate(auto, own, nb).tolist() == agg.aggregate(same, own, nb).tolist()
    assert agg.AggregationConfig(rule=rule, nnm=True).uses_nnm(k + 1)
    assert not agg.AggregationConfig(rule=rule, nnm=False).uses_nnm(k + 1)


@pytest.mark.parametrize(
    ("rows", "auto_f", "forced_f"),
    [(2, 0, 0), (5, 1, 2), (7, 1, 3), (8, 1, 3), (9, 1, 4), (12, 1, 4), (13, 4, 4)],
)
def test_nnm_auto_mixes_with_f_1_when_f_does_not_fit_the_rows(rows: int, auto_f: int, forced_f: int) -> None:
    # issue 16: f capped at (rows - 1) // 2 over-smoothed a sparse graph's 5-7 rows (the median lost 5-12
    # points to it on a random 4-regular graph, 7-9 on a dumbbell clique member's 9 rows); f = 1 there, the
    # configured f once 3f + 1 rows are present
    assert agg.AggregationConfig(rule="median").nnm_f(rows) == auto_f
    assert agg.AggregationConfig(rule="median", nnm=True).nnm_f(rows) == forced_f
    rng = np.random.default_rng(3)
    own = rng.normal(size=5).astype(np.float32)
    nb = rng.normal(size=(rows - 1, 5)).astype(np.float32)
    x = np.vstack([own, nb])
    got = agg.aggregate(agg.AggregationConfig(rule="median", self_clip_scale=None), own, nb)
    want = agg.median(agg.nearest_neighbour_mixing(x, auto_f)) if auto_f else agg.median(x)
    assert got.tolist() == want.tolist()


def test_aggregate_with_no_neighbours_returns_own_model() -> None:
    own = np.arange(4, dtype=np.float32)
    assert own.tolist() == agg.aggregate(agg.AggregationConfig(), own, np.zeros((0, 4))).tolist()
    nb = np.ones((2, 4), dtype=np.float32)
    assert own.tolist() == agg.aggregate(agg.AggregationConfig(), own, nb, np.zeros(2)).tolist()


def test_aggregate_includes_own_model_as_a_row() -> None:
    cfg = agg.AggregationConfig(rule="median", nnm=False, self_clip_scale=None)
    own = np.array([0.0, 0.0], dtype=np.float32)
    nb = np.array([[10.0, 10.0], [20.0, 20.0]], dtype=np.float32)
    assert agg.aggregate(cfg, own, nb).tolist() == [10.0, 10.0]


def test_aggregate_drops_zero_weight_neighbours() -> None:
    cfg = agg.AggregationConfig(rule="mean", nnm=False, self_clip_scale=None)
    own = np.zeros(2, dtype=np.float32)
    nb = np.array([[2.0, 2.0], [1e9, 1e9]], dtype=np.float32)
    assert agg.aggregate(cfg, own, nb, np.array([1.0, 0.0])).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("rule", agg.RULES)
def test_every_rule_runs_through_the_pipeline_for_small_and_large_k(rule: str) -> None:
    rng = np.random.default_rng(13)
    for k in (1, 2, 5, 12):
        own = rng.standard_normal(8).astype(np.float32)
        nb = (own + 0.1 * rng.standard_normal((k, 8))).astype(np.float64)
        out = agg.aggregate(agg.AggregationConfig(rule=rule, f=3), own, nb)
        assert out.shape == (8,)
        assert np.float32 == out.dtype
        assert float(np.max(np.abs(out - own))) < 1.0


@pytest.mark.parametrize("rule", agg.RULES)
def test_huge_finite_poison_does_not_overflow_distances(rule: str) -> None:
    """Coordinates of 1e20 (a sign-flipper compounding x4 per round gets there) square past float32's range:
    every rule still returns a finite aggregate next to the honest rows, without warnings."""
    rng = np.random.default_rng(5)
    own = rng.standard_normal(300).astype(np.float32)
    honest = own + 0.1 * rng.standard_normal((5, 300))
    bad = np.full((2, 300), 1e20) * np.sign(rng.standard_normal((2, 300)))
    nb = np.vstack([honest, bad]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = agg.aggregate(agg.AggregationConfig(rule=rule, f=2), own, nb)
    assert np.isfinite(out).all()
    if rule != "mean":
        assert float(np.max(np.abs(out - own))) < 1.0


def test_pairwise_distances_of_huge_rows_match_float64() -> None:
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((4, 1000)) * 1e20).astype(np.float32)
    x64 = x.astype(np.float64)
    ref = ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(axis=2)
    got = agg._pairwise_sq_dists(x)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize(
    ("own", "nb", "weights", "message"),
    [
        (np.zeros((2, 2)), np.zeros((1, 2)), None, "own must be 1-D"),
        (np.zeros(3), np.zeros((2, 2)), None, "d=2"),
        (np.zeros(2), np.zeros(2), None, "2-D"),
        (np.zeros(2), np.zeros((2, 2)), np.array([1.0, -1.0]), "non-negative"),
        (np.zeros(2), np.zeros((2, 2)), np.array([1.0]), "shape"),
    ],
)
def test_aggregate_rejects_inconsistent_inputs(
    own: np.ndarray, nb: np.ndarray, weights: np.ndarray | None, message: str
) -> None:
    with pytest.raises(AggregationError, match=message):
        agg.aggregate(agg.AggregationConfig(), own, nb, weights)


def test_sorting_network_program_sorts_every_zero_one_input() -> None:
    # 0-1 principle: a comparator network that selects rank r on all 0/1 inputs does so on all inputs.
    for k in (5, 8, 11):
        wanted = tuple(range(k))
        bits = ((np.arange(2**k)[None, :] >> np.arange(k)[:, None]) & 1).astype(np.float32)
        rows: list[np.ndarray] = []

        def collect(s: int, e: int, r: list[np.ndarray], rows: list[np.ndarray] = rows) -> None:
            rows.append(np.stack(r))

        agg._order_statistics_blocked(np.ascontiguousarray(bits), wanted, collect, 1 << 20)
        assert np.array_equal(np.sort(bits, axis=0), rows[0])


def test_many_light_rows_cannot_outvote_the_heavy_ones_by_their_count() -> None:
    """Young identities or a capped organisation enter a mix with small weights. Nearest-neighbour mixing and
    the self-clipping radius weigh them by weight, not by count: twenty rows at 1% each move the default
    pipeline's result by about their weight, not to them."""
    rng = np.random.default_rng(0)
    d = 50
    own = np.zeros(d, np.float32)
    honest = rng.normal(0.0, 0.1, (3, d)).astype(np.float32)
    crowd = (np.full((20, d), 5.0) + rng.normal(0.0, 0.01, (20, d))).astype(np.float32)
    stack = np.vstack([honest, crowd])
    w = np.concatenate([np.ones(3), np.full(20, 0.01)])
    out = agg.aggregate(agg.AggregationConfig(), own, stack, w)
    assert float(np.abs(out).max()) < 0.5, out
    unweighted = agg.aggregate(agg.AggregationConfig(), own, stack)
    assert float(np.abs(unweighted).mean()) > 2.0  # the count wins without weights
    heavier_own = agg.aggregate(
        agg.AggregationConfig(rule="mean", nnm=False, self_clip_scale=None), own, honest, own_weight=3.0
    )
    assert np.allclose(heavier_own, honest.sum(axis=0) / 6.0, atol=1e-6)
    with pytest.raises(AggregationError):
        agg.aggregate(agg.AggregationConfig(), own, honest, own_weight=0.0)
