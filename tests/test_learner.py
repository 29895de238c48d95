"""NumpySoftmaxLearner's proximal term (issue 16: a heterogeneity correction measured on sparse graphs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from p2pfl.learner import Dataset, NumpySoftmaxLearner, ResettableLearner


def _learner(prox: float) -> NumpySoftmaxLearner:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)  # one-sided data: local steps drift far from the start
    data = Dataset(x, y)
    return NumpySoftmaxLearner(data, data, 2, hidden=4, lr=0.5, prox=prox, seed=3)


def _drift(learner: NumpySoftmaxLearner) -> float:
    start = learner.get_params()
    learner.train(30)
    after = learner.get_params()
    return float(np.sqrt(sum(np.sum((after[k] - start[k]) ** 2) for k in start)))


def test_prox_zero_is_plain_sgd_and_prox_keeps_local_steps_near_the_start() -> None:
    plain = NumpySoftmaxLearner(_learner(0.0).train_data, _learner(0.0).val_data, 2, hidden=4, lr=0.5, seed=3)
    a, b = _learner(0.0), plain
    a.train(5)
    b.train(5)
    assert all(np.array_equal(a.get_params()[k], b.get_params()[k]) for k in a.get_params())
    assert _drift(_learner(2.0)) < 0.8 * _drift(_learner(0.0))


@pytest.mark.parametrize("bad", [-0.1, float("inf"), float("nan")])
def test_prox_must_be_finite_and_non_negative(bad: float) -> None:
    with pytest.raises(ValueError, match="prox"):
        _learner(bad)


def _numpy_learner() -> NumpySoftmaxLearner:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    return NumpySoftmaxLearner(Dataset(x, y), Dataset(x, y), 3, hidden=4, seed=1)


def _torch_learner() -> Any:
    torch = pytest.importorskip("torch")
    from p2pfl.learner_torch import TorchLearner

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    module = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    return TorchLearner(module, torch.nn.functional.cross_entropy, (x, y), (x, y), seed=1)


def _finite(params: dict[str, Any]) -> bool:
    return all(bool(np.isfinite(v).all()) for v in params.values())


@pytest.mark.parametrize("make", [_numpy_learner, _torch_learner], ids=["numpy", "torch"])
def test_a_diverged_round_poisons_the_momentum_until_the_optimizer_is_reset(make: Any) -> None:
    """The trap the peer's reset closes: a round that overflowed leaves the momentum non-finite, and since
    ``set_params`` keeps it (it carries over rounds), training from a good model diverges again; after
    ``reset_optimizer`` it trains again."""
    learner = make()
    assert isinstance(learner, ResettableLearner)
    good = learner.get_params()
    with np.errstate(over="ignore", invalid="ignore"):
        learner.set_params({k: (v + 1.0) * 1e20 for k, v in good.items()})
        learner.train(3)
        assert not _finite(learner.get_params())
        learner.set_params(good)
        learner.train(3)
        assert not _finite(learner.get_params())  # the momentum carried the overflow over
    learner.set_params(good)
    learner.reset_optimizer()
    learner.train(3)
    after = learner.get_params()
    assert _finite(after) and any(not np.array_equal(after[k], good[k]) for k in good)


@pytest.mark.parametrize("make", [_numpy_learner, _torch_learner], ids=["numpy", "torch"])
def test_an_evaluation_counts_the_answers_per_class(make: Any) -> None:
    """``EvalResult.predicted`` (scoring's specialists): one count per class, summing to the samples, and
    consistent with the accuracy (a right answer needs the class's count)."""
    learner = make()
    learner.train(5)
    result = learner.evaluate()
    assert result.predicted is not None and len(result.predicted) == 3
    assert sum(result.predicted) == result.samples == 64
    assert all(n >= 0 for n in result.predicted)
