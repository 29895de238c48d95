"""Record-level DP-SGD: per-example gradients are right, each example's influence on a step is bounded by
the clipping norm (an outlier built to dominate the step cannot), and the batch is Poisson-sampled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from p2pfl.errors import ConfigError
from p2pfl.learner import Dataset, NumpySoftmaxLearner, TorchLearner
from p2pfl.privacy.dpsgd import DPSGD, clipped_sum

N, F, C = 24, 5, 3


def data(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, F)).astype(np.float32)
    return Dataset(x, rng.integers(0, C, N).astype(np.int64))


def with_outlier(d: Dataset) -> Dataset:
    """Record 0 replaced by an adversarial one: huge features and a label its model must move far for."""
    x, y = d.x.copy(), d.y.copy()
    x[0] = 1e4
    y[0] = (y[0] + 1) % C
    return Dataset(x, y)


def numpy_learner(d: Dataset, hidden: int) -> NumpySoftmaxLearner:
    return NumpySoftmaxLearner(d, d, C, hidden=hidden, lr=1.0, momentum=0.0, batch_size=N, seed=3)


def one_step(learner: NumpySoftmaxLearner | TorchLearner, dp: DPSGD | None) -> dict[str, np.ndarray]:
    """The parameter change of one training step (with DP-SGD when ``dp`` is given)."""
    before = learner.get_params()
    if dp is not None:
        learner.enable_dp(dp)
    learner.train(1)
    after = learner.get_params()
    return {k: after[k].astype(np.float64) - before[k] for k in before}


def norm(change: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum((v * v).sum() for v in change.values())))


def diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: a[k] - b[k] for k in a}


@pytest.mark.parametrize("hidden", [0, 8])
def test_numpy_per_example_gradients_sum_to_the_plain_batch_gradient_without_clipping(hidden: int) -> None:
    plain = one_step(numpy_learner(data(), hidden), None)
    dp = one_step(numpy_learner(data(), hidden), DPSGD(0.0, 1e9, 1.0, rng=np.random.default_rng(0)))
    for k in plain:
        np.testing.assert_allclose(dp[k], plain[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("hidden", [0, 8])
def test_numpy_one_records_influence_on_a_step_is_bounded_by_the_clipping_norm(hidden: int) -> None:
    clip = 0.5
    d, d2 = data(), with_outlier(data())

    def step(ds: Dataset, dp: DPSGD | None) -> dict[str, np.ndarray]:
        return one_step(numpy_learner(ds, hidden), dp)

    # plain SGD: the outlier moves the step by far more than any bound (the attack works without DP)
    assert norm(diff(step(d2, None), step(d, None))) > 100 * clip / N
    # DP-SGD (noise off to see the clipping alone, every record sampled): replacing one record moves the
    # step by at most 2C / (q n)
    dp = lambda: DPSGD(0.0, clip, 1.0, rng=np.random.default_rng(1))  # noqa: E731
    moved = norm(diff(step(d2, dp()), step(d, dp())))
    assert moved <= 2 * clip / N * (1 + 1e-5)
    assert moved > 0.5 * clip / N  # the outlier is clipped, not dropped


def test_each_examples_clipped_gradient_has_norm_at_most_c() -> None:
    learner = numpy_learner(with_outlier(data()), 8)
    dp = DPSGD(0.0, 0.25, 1.0, rng=np.random.default_rng(0))
    p = learner.get_params()
    for i in range(N):
        summed, _ = clipped_sum(
            learner, p, learner.train_data.x[i : i + 1], learner.train_data.y[i : i + 1], dp
        )
        assert norm(summed) <= 0.25 * (1 + 1e-9)


def test_poisson_sampling_draws_each_record_independently_at_the_rate() -> None:
    dp = DPSGD(1.0, 1.0, 0.1, rng=np.random.default_rng(7))
    sizes = [len(dp.sample(1000)) for _ in range(200)]
    assert 95 < np.mean(sizes) < 105  # expected 100
    assert np.std(sizes) > 5  # Poisson (binomial) sizes, not a fixed batch
    counts = np.zeros(1000)
    for _ in range(200):
        counts[dp.sample(1000)] += 1
    assert counts.min() > 0  # every record can be drawn


def test_the_noise_has_the_calibrated_scale() -> None:
    dp = DPSGD(2.0, 0.5, 0.1, rng=np.random.default_rng(0))
    noisy = dp.privatise({"w": np.zeros(200_000)}, n=100)["w"]
    # std of the noise on the sum is sigma * C, then divided by q * n = 10
    assert np.std(noisy) == pytest.approx(2.0 * 0.5 / 10, rel=0.02)


# ------------------------------------------------------------------------------------------- torch


def torch_learner(d: Dataset, lr: float = 1.0) -> TorchLearner:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(F, 8), torch.nn.ReLU(), torch.nn.Linear(8, C))
    return TorchLearner(
        module,
        torch.nn.functional.cross_entropy,
        (torch.from_numpy(d.x), torch.from_numpy(d.y)),
        (torch.from_numpy(d.x), torch.from_numpy(d.y)),
        optimizer=lambda ps: torch.optim.SGD(ps, lr=lr),
        batch_size=N,
    )


def test_torch_per_sample_gradients_sum_to_the_plain_batch_gradient_without_clipping() -> None:
    plain = one_step(torch_learner(data()), None)
    dp = one_step(torch_learner(data()), DPSGD(0.0, 1e9, 1.0, rng=np.random.default_rng(0)))
    for k in plain:
        np.testing.assert_allclose(dp[k], plain[k], rtol=1e-4, atol=1e-6)


def test_torch_one_records_influence_on_a_step_is_bounded_by_the_clipping_norm() -> None:
    clip = 0.5
    d, d2 = data(), with_outlier(data())
    assert norm(diff(one_step(torch_learner(d2), None), one_step(torch_learner(d), None))) > 100 * clip / N
    dp = lambda: DPSGD(0.0, clip, 1.0, rng=np.random.default_rng(1))  # noqa: E731
    moved = norm(diff(one_step(torch_learner(d2), dp()), one_step(torch_learner(d), dp())))
    assert moved <= 2 * clip / N * (1 + 1e-5)


def test_torch_dp_sgd_refuses_batch_norm() -> None:
    d = data()
    module = torch.nn.Sequential(torch.nn.Linear(F, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, C))
    learner = TorchLearner(
        module, torch.nn.functional.cross_entropy, (torch.from_numpy(d.x), torch.from_numpy(d.y)),
        (torch.from_numpy(d.x), torch.from_numpy(d.y)),
    )  # fmt: skip
    with pytest.raises(ConfigError, match="batch norm"):
        learner.enable_dp(DPSGD(1.0, 1.0, 0.5))
