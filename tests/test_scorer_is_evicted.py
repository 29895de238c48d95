"""``ContributionScorer.is_evicted`` (the protocol's per-envelope check) agrees with ``status``."""

from __future__ import annotations

from p2pfl.scoring import ContributionScorer, ScoringConfig
from tests.test_scoring import World, run


def _agrees(scorer: ContributionScorer, peers: list[str]) -> None:
    for p in peers:
        assert scorer.is_evicted(p) == (scorer.status(p) == "evicted"), p


def test_is_evicted_agrees_with_status_through_eviction_and_readmission() -> None:
    scorer = ContributionScorer(ScoringConfig(probation_length=2))
    world = World(seed=3)
    peers = ["x", "y", *world.honest, "never-heard"]
    _agrees(scorer, peers)
    run(scorer, world, {"x": "scaled", "y": "signflip"}, rounds=8)
    assert scorer.is_evicted("x") and scorer.is_evicted("y")
    assert not any(scorer.is_evicted(p) for p in world.honest)
    _agrees(scorer, peers)
    scorer.readmit("x")
    assert not scorer.is_evicted("x")
    _agrees(scorer, peers)


def test_unknown_peer_is_never_evicted_even_with_a_low_initial_reputation() -> None:
    scorer = ContributionScorer(ScoringConfig(initial_reputation=0.0))
    assert scorer.status("new") == "excluded"
    assert not scorer.is_evicted("new")
