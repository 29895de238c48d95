"""The round's own-data guards as a pure function: table tests, and the refused-mix rollback regression."""

from __future__ import annotations

import numpy as np
import pytest

from p2pfl.learner import EvalResult
from p2pfl.protocol.guards import GuardConfig, RollbackGuard, check_trained, decide_round, refuses_mix


def ev(acc: float | None, loss: float = 1.0) -> EvalResult:
    return EvalResult(loss=loss, accuracy=acc, samples=10)


def params(x: float) -> dict[str, np.ndarray]:
    return {"w": np.full(3, x, np.float32)}


@pytest.mark.parametrize(
    "case",
    [
        (1, 0.9, 0.1, 0.5, 0, True),  # the mix lost over half the trained accuracy
        (1, 0.9, 0.5, 0.5, 0, False),  # within the margin (0.45 is the bar)
        (1, 0.9, 0.45, 0.5, 0, False),  # exactly at the bar: not below it
        (1, 0.9, None, 0.5, 0, True),  # a mix without an accuracy is refused
        (1, None, 0.1, 0.5, 0, False),  # nothing to compare with: the mix stays
        (1, 0.9, 0.1, None, 0, False),  # the guard is off
        (2, 0.9, 0.1, 0.5, 2, False),  # still warming up (round <= warmup)
        (3, 0.9, 0.1, 0.5, 2, True),  # warmed up
    ],
)
def test_the_mix_guard_rule(
    case: tuple[int, float | None, float | None, float | None, int, bool],
) -> None:
    round_, trained, mixed, margin, warmup, refused = case
    cfg = GuardConfig(mix_guard_margin=margin, mix_guard_warmup=warmup)
    assert refuses_mix(round_, ev(trained), ev(mixed), cfg) is refused
    d = decide_round(round_, ev(trained), ev(mixed), params(1.0), params(2.0), cfg=cfg, rollback=None)
    assert d.mix_refused is refused
    assert d.params_source == ("trained" if refused else "mixed")
    assert np.array_equal(d.params["w"], params(1.0 if refused else 2.0)["w"])
    assert d.evaluation.accuracy == (trained if refused else mixed)
    assert [n[0] for n in d.notes] == (["mix_refused"] if refused else [])


def test_no_trained_evaluation_keeps_the_mix() -> None:
    cfg = GuardConfig(mix_guard_margin=0.5)
    d = decide_round(1, None, ev(0.1), params(1.0), params(2.0), cfg=cfg, rollback=None)
    assert not d.mix_refused and d.params_source == "mixed"


def test_check_trained_refuses_non_finite_parameters() -> None:
    assert check_trained(params(1.0))
    assert not check_trained({"w": np.array([1.0, np.nan], np.float32)})
    assert not check_trained({"a": np.ones(2, np.float32), "b": np.array([np.inf], np.float32)})


def test_a_rollback_never_restores_a_refused_mix() -> None:
    """Regression: a refused mix was remembered by the rollback guard under the trained model's accuracy, so
    a later rollback restored the poisoned mix. The guard must remember the trained model it kept."""
    cfg = GuardConfig(mix_guard_margin=0.5, rollback_margin=0.3, rollback_warmup=0)
    guard = RollbackGuard(margin=0.3, warmup=0)
    trained1, poisoned = params(0.9), params(-5.0)
    d1 = decide_round(1, ev(0.9), ev(0.1), trained1, poisoned, cfg=cfg, rollback=guard)
    assert d1.mix_refused and d1.params_source == "trained"
    d2 = decide_round(2, ev(0.85), ev(0.85), params(0.85), params(0.85), cfg=cfg, rollback=guard)
    assert not d2.rolled_back
    d3 = decide_round(3, ev(0.3), ev(0.3), params(0.3), params(0.3), cfg=cfg, rollback=guard)
    assert d3.rolled_back and d3.params_source == "rollback"
    assert np.array_equal(d3.params["w"], trained1["w"])
    assert not np.array_equal(d3.params["w"], poisoned["w"])
    assert d3.notes[0][0] == "rollback" and "0.9000" in d3.notes[0][1]  # names the restored accuracy


def test_the_guard_order_is_mix_guard_then_rollback() -> None:
    """A refused mix's round is judged by the trained accuracy: a trained model that is itself far below
    the best recent one is rolled back in the same round."""
    cfg = GuardConfig(mix_guard_margin=0.5, rollback_margin=0.2, rollback_warmup=0)
    guard = RollbackGuard(margin=0.2, warmup=0)
    decide_round(1, ev(0.9), ev(0.9), params(0.9), params(0.9), cfg=cfg, rollback=guard)
    d = decide_round(2, ev(0.5), ev(0.1), params(0.5), params(0.1), cfg=cfg, rollback=guard)
    assert d.mix_refused and d.rolled_back
    assert d.evaluation.accuracy == 0.5  # the trained model's, which the rollback guard judged
    assert [n[0] for n in d.notes] == ["mix_refused", "rollback"]
    assert np.array_equal(d.params["w"], params(0.9)["w"])


def test_rollback_waits_for_its_warmup() -> None:
    cfg = GuardConfig(rollback_margin=0.2, rollback_warmup=2)
    guard = RollbackGuard(margin=0.2, warmup=2)
    outcomes = [
        decide_round(r, None, ev(acc), params(acc), params(acc), cfg=cfg, rollback=guard).rolled_back
        for r, acc in enumerate([0.9, 0.1, 0.1, 0.9, 0.1], start=1)
    ]
    assert outcomes == [False, False, True, False, True]
