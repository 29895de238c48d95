"""Probation counts evaluations without eviction evidence: the reason text says so, not "good evaluations"."""

from __future__ import annotations

from p2pfl.scoring.config import ScoringConfig
from p2pfl.scoring.standing import PeerState, transition


def test_a_bad_score_too_near_to_count_advances_probation_and_the_reason_says_so() -> None:
    cfg = ScoringConfig(probation_length=3)
    state = PeerState(reputation=cfg.probation_reputation, status="probation", probation_left=3)
    reason = transition(cfg, state, True, 0.1, counts=False)
    assert (state.status, state.probation_left) == ("probation", 2)
    assert "good" not in reason
    assert reason == (
        "probation: bad score 0.100 (too near to count towards eviction); "
        "2 evaluations without eviction evidence to go"
    )
    reason = transition(cfg, state, False, 0.9, counts=False)
    assert reason == "probation: 1 evaluations without eviction evidence to go"
    transition(cfg, state, True, 0.1, counts=False)
    assert state.status != "probation"  # three evaluations without eviction evidence end it


def test_a_bad_score_that_counts_ends_probation_with_an_eviction() -> None:
    cfg = ScoringConfig(probation_length=3)
    state = PeerState(reputation=cfg.probation_reputation, status="probation", probation_left=3)
    reason = transition(cfg, state, True, 0.1, counts=True)
    assert state.status == "evicted"
    assert reason.startswith("evicted: bad evaluation on probation")


def test_a_count_on_probation_that_is_not_a_bad_score_says_its_score_is_not_below_the_bar() -> None:
    """A version counted by ``evict_far_against`` (far, against the own update, lossy) scores above
    ``bad_score``: the reason must not claim its score is below it."""
    cfg = ScoringConfig(probation_length=3)
    state = PeerState(reputation=cfg.probation_reputation, status="probation", probation_left=3)
    reason = transition(cfg, state, False, 0.571, counts=True)
    assert state.status == "evicted"
    assert reason == "evicted: bad evaluation on probation (counted at score 0.571, not below 0.3)"
