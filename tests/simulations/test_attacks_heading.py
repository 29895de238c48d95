"""The adaptive forms of ALIE and IPM against the heading signal (p2pfl/scoring/heading.py): each drops
exactly what the signal looks at and keeps the rest of its attack."""

from __future__ import annotations

import numpy as np
import pytest

from p2pfl.learner import NumpySoftmaxLearner
from p2pfl.scoring.heading import Heading
from p2pfl.sim.attacks import ALIE, IPM

from .test_attacks16 import _learner, _round
from .test_engines import scenario

Params = dict[str, np.ndarray]


def _flat(p: Params) -> np.ndarray:
    return np.concatenate([p[k].ravel() for k in sorted(p)])


def _models(rng: np.random.Generator, inner: NumpySoftmaxLearner, shift: float = 0.0) -> list[Params]:
    return [
        {k: (rng.standard_normal(v.shape) + shift).astype(np.float32) for k, v in inner.get_params().items()}
        for _ in range(5)
    ]


def test_alie_with_random_signs_shifts_each_coordinate_by_its_spread_in_a_sign_kept_for_the_run() -> None:
    inner = _learner()
    rng = np.random.default_rng(0)
    w = ALIE(inner, z=1.0, signs="random", seed=3)
    signs = []
    for _ in range(2):
        models = _models(rng, inner)
        w.view = lambda models=models: models  # type: ignore[misc]
        out = _round(w)
        stack = np.stack([_flat(m) for m in models])
        mean, std = stack.mean(axis=0), stack.std(axis=0)
        s = (mean - _flat(out)) / std
        assert np.allclose(np.abs(s), 1.0, atol=1e-4)
        signs.append(np.sign(s))
    assert np.array_equal(signs[0], signs[1])
    assert 0.3 < float(np.mean(signs[0] > 0)) < 0.7  # not the fixed sign pattern the shift test sees
    plain = ALIE(inner, z=1.0)
    plain.view = lambda: models
    stack = np.stack([_flat(m) for m in models])
    assert np.allclose(_flat(_round(plain)), stack.mean(axis=0) - stack.std(axis=0), atol=1e-5)


def test_ipm_evading_the_lag_test_keeps_no_component_back_along_the_progress_it_sees() -> None:
    inner = _learner()
    rng = np.random.default_rng(1)
    w = IPM(inner, epsilon=0.5, evade_lag=True)
    plain = IPM(inner, epsilon=0.5)
    base = _models(rng, inner)
    progress = None
    out = plain_out = np.zeros(1)
    for t in range(4):  # the neighbours' models move together by +0.5 per round
        models = [{k: v + 0.5 * t for k, v in m.items()} for m in base]
        w.view = lambda models=models: models  # type: ignore[misc]
        plain.view = lambda models=models: models  # type: ignore[misc]
        out, plain_out = _flat(_round(w)), _flat(_round(plain))
        progress = np.full_like(out, 0.5)
    mean = np.mean([_flat(m) for m in models], axis=0)
    assert progress is not None
    assert float((plain_out - mean) @ progress) < 0  # the plain attack lags behind the motion
    assert float((out - mean) @ progress) >= -1e-3 * np.linalg.norm(out - mean) * np.linalg.norm(progress)
    assert np.linalg.norm(out - mean) > 0.1  # it still pushes, orthogonally to the progress


def test_ipm_that_knows_the_lag_thresholds_keeps_its_cosine_with_the_progress_at_the_floor() -> None:
    inner = _learner()
    rng = np.random.default_rng(1)
    w = IPM(inner, epsilon=0.5, lag_floor=-0.25)
    plain = IPM(inner, epsilon=0.5)
    base = _models(rng, inner)
    out = plain_out = np.zeros(1)
    models = base
    for t in range(4):  # the neighbours' models move together by +0.5 per round
        models = [{k: v + 0.5 * t for k, v in m.items()} for m in base]
        w.view = lambda models=models: models  # type: ignore[misc]
        plain.view = lambda models=models: models  # type: ignore[misc]
        out, plain_out = _flat(_round(w)), _flat(_round(plain))
    mean = np.mean([_flat(m) for m in models], axis=0)
    u = np.full_like(out, 1.0) / np.sqrt(out.size)

    def cos(x: np.ndarray) -> float:
        return float((x - mean) @ u / np.linalg.norm(x - mean))

    assert cos(plain_out) < -0.25  # the plain attack lags more than the floor
    assert cos(out) == pytest.approx(-0.25, abs=1e-3)  # just inside heading_lag_ok, still pushing back


def test_the_gate_breaker_extrapolates_the_neighbours_update_forward() -> None:
    inner = _learner()
    rng = np.random.default_rng(3)
    models = _models(rng, inner)
    w = IPM(inner, epsilon=0.5, ahead=True)
    w.view = lambda: models
    out = _flat(_round(w))
    start = _flat(w._start)  # type: ignore[arg-type]
    mean = np.mean([_flat(m) for m in models], axis=0)
    assert np.allclose(out, mean + 0.5 * (mean - start), atol=1e-5)


def test_the_plain_attacks_lose_their_heading_weight_and_the_adaptive_ones_keep_it() -> None:
    """Both forms fed to the signal the way a peer sees them: its own model and the attacker's neighbours."""
    inner = _learner()
    for adaptive in (False, True):
        rng = np.random.default_rng(2)
        alie = ALIE(inner, z=1.0, signs="random" if adaptive else "fixed", seed=5)
        tracker = Heading()
        base = _models(rng, inner)
        for t in range(10):
            models = [
                {k: v + 0.3 * t + 0.3 * rng.standard_normal(v.shape) for k, v in m.items()} for m in base
            ]
            alie.view = lambda models=models: models  # type: ignore[misc]
            seen = {f"h{i}": _flat(m) for i, m in enumerate(models)}
            seen["a"] = _flat(_round(alie)).astype(np.float64)
            tracker.observe(np.mean(list(seen.values()), axis=0), seen, dict.fromkeys(seen, True))
        assert (tracker.weight("a") == 1.0) is adaptive, adaptive


def test_scenario_parses_the_adaptive_knobs() -> None:
    sc = scenario(attack={"kind": "alie", "fraction": 0.25, "alie_signs": "random"})
    assert sc.attack.alie_signs == "random"
    sc = scenario(attack={"kind": "ipm", "fraction": 0.25, "ipm_evade_lag": True})
    assert sc.attack.ipm_evade_lag is True
    sc = scenario(attack={"kind": "ipm", "fraction": 0.25, "ipm_lag_floor": -0.25})
    assert sc.attack.ipm_lag_floor == -0.25
    sc = scenario(attack={"kind": "ipm", "fraction": 0.25, "ipm_gate_breakers": True})
    assert sc.attack.ipm_gate_breakers is True
