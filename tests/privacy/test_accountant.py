"""The accountant is dp-accounting's: epsilon, calibration and budget against the library's own numbers."""

from __future__ import annotations

import dp_accounting as dpa
import pytest

from p2pfl.errors import StateError
from p2pfl.privacy.accountant import RDP_ORDERS, Mechanism, calibrate, epsilon
from p2pfl.privacy.budget import PrivacyBudget

DELTA = 1e-5


def library_epsilon(q: float, sigma: float, steps: int, accountant: dpa.PrivacyAccountant) -> float:
    """DP-SGD's epsilon as dp-accounting's own documentation composes it: ``steps`` Poisson-sampled
    Gaussian steps, one flat composition."""
    accountant.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps)
    return float(accountant.get_epsilon(DELTA))


@pytest.mark.parametrize(
    ("q", "sigma", "steps", "rounds"),
    [(16 / 150, 1.0, 10, 40), (16 / 150, 3.3, 10, 40), (0.01, 1.1, 20, 50), (1.0, 8.0, 5, 3)],
)
def test_record_level_epsilon_equals_dp_accountings_own_for_the_same_parameters(
    q: float, sigma: float, steps: int, rounds: int
) -> None:
    ours = epsilon(Mechanism("record", sigma, q, steps), rounds, DELTA)
    theirs = library_epsilon(q, sigma, steps * rounds, dpa.rdp.RdpAccountant(orders=list(RDP_ORDERS)))
    assert ours == pytest.approx(theirs, rel=1e-9)
    # the compact order set only loosens the bound, and only a little, against the library's defaults
    default = library_epsilon(q, sigma, steps * rounds, dpa.rdp.RdpAccountant())
    assert default <= ours * (1 + 1e-9)
    assert ours <= default * 1.05


def test_pld_epsilon_equals_dp_accountings_pld_and_is_at_most_rdps() -> None:
    q, sigma, steps, rounds = 16 / 150, 2.0, 10, 20
    ours = epsilon(Mechanism("record", sigma, q, steps), rounds, DELTA, "pld")
    theirs = library_epsilon(
        q, sigma, steps * rounds, dpa.pld.PLDAccountant(value_discretization_interval=1e-3)
    )
    assert ours == pytest.approx(theirs, rel=1e-3)
    assert ours <= epsilon(Mechanism("record", sigma, q, steps), rounds, DELTA, "rdp")


def test_peer_level_is_a_gaussian_mechanism_of_sensitivity_twice_the_clip_per_round() -> None:
    sigma, rounds = 6.0, 30
    acc = dpa.rdp.RdpAccountant(orders=list(RDP_ORDERS))
    acc.compose(dpa.GaussianDpEvent(sigma / 2), rounds)
    assert epsilon(Mechanism("peer", sigma), rounds, DELTA) == pytest.approx(acc.get_epsilon(DELTA), rel=1e-9)


@pytest.mark.parametrize(
    ("kind", "target"), [("record", 1.0), ("record", 3.0), ("record", 8.0), ("peer", 3.0)]
)
def test_calibrated_noise_spends_the_budget_in_exactly_the_planned_rounds(kind: str, target: float) -> None:
    base = Mechanism(kind, 1.0, 16 / 150 if kind == "record" else 1.0, 10 if kind == "record" else 1)
    rounds = 40
    sigma = calibrate(base, target, DELTA, rounds)
    mech = base.with_noise(sigma)
    assert epsilon(mech, rounds, DELTA) <= target
    assert epsilon(mech, rounds, DELTA) >= target * 0.98  # not needlessly noisy
    budget = PrivacyBudget(mech, DELTA, target)
    assert budget.may_publish(rounds - 1)
    assert not budget.may_publish(rounds)  # the 41st round would exceed it
    assert budget.rounds_left(0) == rounds


def test_the_budget_refuses_a_round_past_it_and_tracks_a_monotone_epsilon() -> None:
    mech = Mechanism("record", 1.5, 0.1, 10)
    budget = PrivacyBudget(mech, DELTA, 2.0)
    spent = [budget.spent(n) for n in range(8)]
    assert spent[0] == 0.0
    assert spent == sorted(spent)
    last = budget.rounds_left(0)
    assert last is not None and last >= 1
    assert budget.check_publish(last - 1) <= 2.0
    with pytest.raises(StateError, match="privacy budget spent"):
        budget.check_publish(last)
    unlimited = PrivacyBudget(mech, DELTA, None)
    assert unlimited.may_publish(10**4) and unlimited.rounds_left(5) is None


@pytest.mark.parametrize("target", [3.0, 8.0])
def test_pld_calibration_spends_the_budget_with_less_noise_than_rdp(target: float) -> None:
    """Many sampled steps (the synthetic_hard benchmark's 40 rounds x 40 steps at q ~ 0.1): PLD is tighter, so
    the same budget needs less noise; its calibration is bracketed from RDP's (from the generic lower end,
    sigma 1e-3, this calibration ran past 90 s)."""
    mech = Mechanism("record", 1.0, 1024 / 10625, 40)
    rdp = calibrate(mech, target, DELTA, 40, "rdp")
    pld = calibrate(mech, target, DELTA, 40, "pld")
    assert pld < rdp
    spent = epsilon(mech.with_noise(pld), 40, DELTA, "pld")
    assert target * 0.99 <= spent <= target * (1 + 1e-6)
