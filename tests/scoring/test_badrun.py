"""The leaky bucket of bad evidence (p2pfl.scoring.badrun): an intermittent poisoner is evicted, an honest
neighbour whose score dips now and then is not, and the densest poisoning the rule tolerates is known."""

from __future__ import annotations

import numpy as np
import pytest

from p2pfl.errors import ConfigError
from p2pfl.scoring import ContributionScorer, ScoringConfig
from p2pfl.scoring.badrun import leak, peak, tolerated_period

from ..test_scoring import World


def _run_intermittent(cfg: ScoringConfig, pattern: str, rounds: int, seed: int = 1) -> list[str]:
    """The attacker ``x`` publishes a sign-flipped model where ``pattern`` (cycled) says ``b``, else a copy of
    an honest neighbour's model; returns its status after each round."""
    scorer = ContributionScorer(cfg)
    world = World(seed=seed)
    statuses = []
    for i in range(rounds):
        poisoned = pattern[i % len(pattern)] == "b"
        before, after, models, centre = world.round({"x": "signflip"} if poisoned else {})
        if not poisoned:
            models["x"] = models["h1"] + 0.001
        losses, own_loss = world.val_losses(models)
        records = scorer.evaluate(before, after, models, centre, losses, own_loss)
        assert all(records[p].status == "active" for p in world.honest)
        statuses.append(records["x"].status)
    return statuses


def test_leak_and_peak_match_the_closed_form() -> None:
    e = 0.0
    for i in range(400):
        e = leak(e, i % 3 == 0, 0.9)
    assert e == pytest.approx(1.0 / (1.0 - 0.9**3) * 0.9**0, rel=1e-9)  # just after a bad one (i = 399)
    assert peak(0.9, 3) == pytest.approx(1.0 / (1.0 - 0.729))
    assert peak(0.0, 1) == 1.0
    assert peak(0.9, 0) == peak(0.9, 1)


def test_defaults_evict_one_bad_in_three_and_tolerate_one_in_four() -> None:
    cfg = ScoringConfig()
    assert tolerated_period(cfg.bad_memory, cfg.evict_after) == 4
    assert peak(cfg.bad_memory, 3) >= cfg.evict_after > peak(cfg.bad_memory, 4)
    assert tolerated_period(0.0, 4) == 1  # memory 0: the consecutive rule alone
    assert tolerated_period(0.999, 4, limit=5) is None


@pytest.mark.parametrize("pattern", ["bg", "bgg", "bbg", "bgbgg"])
def test_a_poisoner_alternating_bad_and_honest_versions_is_evicted(pattern: str) -> None:
    """Fails on the consecutive rule alone (``bad_memory = 0``, the old code): each honest version resets
    the run of bad scores and the attacker is never evicted."""
    statuses = _run_intermittent(ScoringConfig(), pattern, rounds=60)
    assert "evicted" in statuses
    assert "evicted" not in _run_intermittent(ScoringConfig(bad_memory=0.0), pattern, rounds=60)


def test_the_adaptive_attacker_poisoning_at_the_tolerated_rate_stays_and_one_more_evicts_it() -> None:
    """The attacker who knows ``bad_memory`` and ``evict_after`` poisons one version in ``k`` =
    :func:`tolerated_period` (a share of 1/4 with the defaults): it stays (the rule's documented limit), and
    each of its poisoned versions still scores bad (so ``drop_bad_at_once`` keeps it out of the mix). One
    version more often and it is evicted."""
    cfg = ScoringConfig()
    k = tolerated_period(cfg.bad_memory, cfg.evict_after)
    assert k is not None
    assert "evicted" not in _run_intermittent(cfg, "b" + "g" * (k - 1), rounds=120)
    assert "evicted" in _run_intermittent(cfg, "b" + "g" * (k - 2), rounds=120)


def test_an_honest_neighbour_whose_score_dips_now_and_then_is_not_evicted() -> None:
    """Isolated bad scores, even two in a row, spaced as an honest non-IID neighbour's dips are, leak away."""
    assert "evicted" not in _run_intermittent(ScoringConfig(), "bb" + "g" * 12, rounds=140)
    assert "evicted" not in _run_intermittent(ScoringConfig(), "b" + "g" * 9, rounds=140)


def test_consecutive_bad_scores_still_evict_after_evict_after() -> None:
    statuses = _run_intermittent(ScoringConfig(), "b", rounds=10)
    assert statuses.index("evicted") == ScoringConfig().evict_after - 1


def test_readmission_and_grace_empty_the_bucket() -> None:
    cfg = ScoringConfig()
    scorer = ContributionScorer(cfg)
    world = World(seed=2)
    for i in range(20):  # b g b g ...: evicted by the bucket, never by the consecutive rule
        before, after, models, centre = world.round({"x": "signflip"} if i % 2 == 0 else {})
        if i % 2:
            models["x"] = models["h1"] + 0.001
        losses, own_loss = world.val_losses(models)
        scorer.evaluate(before, after, models, centre, losses, own_loss)
        if scorer.status("x") == "evicted":
            break
    assert scorer.status("x") == "evicted"
    assert scorer._peers["x"].consecutive_bad == 1
    scorer.readmit("x")
    assert scorer._peers["x"].bad_evidence == 0.0
    scorer._peers["x"].status = "active"
    scorer._peers["x"].bad_evidence = 3.5
    scorer.grant_grace("x")
    assert scorer._peers["x"].bad_evidence == 0.0


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan"), "0.9", True])
def test_config_rejects_bad_memory_outside_0_1(value: object) -> None:
    with pytest.raises(ConfigError, match=r"\[scoring\] bad_memory"):
        ScoringConfig(bad_memory=value)  # type: ignore[arg-type]


def test_an_absurd_model_fills_the_bucket_too() -> None:
    cfg = ScoringConfig()
    scorer = ContributionScorer(cfg)
    world = World(seed=3)
    before, after, models, centre = world.round({})
    models["x"] = np.full_like(after, 1e9)
    losses, own_loss = world.val_losses(models)
    scorer.evaluate(before, after, models, centre, losses, own_loss)
    assert scorer._peers["x"].bad_evidence == 1.0
