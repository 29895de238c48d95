"""The seams split out of the scorer: the component scores (p2pfl.scoring.components) and who sets the
yardsticks of an evaluation (p2pfl.scoring.references), each driven alone."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from p2pfl.errors import AggregationError
from p2pfl.scoring import ScoringConfig
from p2pfl.scoring.components import as_vec, combine, cosine_score, distance_ratio, loss_score, ramp_down
from p2pfl.scoring.losses import LossTolerance
from p2pfl.scoring.references import references
from p2pfl.scoring.standing import PeerState


def test_ramp_down_and_distance_ratio_at_their_edges() -> None:
    assert ramp_down(1.0, 1.0, 3.0) == 1.0
    assert ramp_down(2.0, 1.0, 3.0) == 0.5
    assert ramp_down(math.inf, 1.0, 3.0) == 0.0
    assert distance_ratio(3.0, 2.0) == 1.5
    assert distance_ratio(0.0, 0.0) == 0.0  # at the centre when every distance is 0
    assert distance_ratio(1.0, 0.0) == math.inf


def test_cosine_is_skipped_for_a_zero_vector_and_scores_direction() -> None:
    cfg = ScoringConfig()
    update = np.array([1.0, 0.0])
    assert cosine_score(cfg, np.zeros(2), update, 1.0) == (None, None)
    assert cosine_score(cfg, update, np.zeros(2), 0.0) == (None, None)
    cos, score = cosine_score(cfg, np.array([2.0, 0.0]), update, 1.0)
    assert (cos, score) == (1.0, 1.0)
    cos, score = cosine_score(cfg, np.array([-1.0, 0.0]), update, 1.0)
    assert (cos, score) == (-1.0, 0.0)


def test_a_non_finite_loss_scores_zero_whatever_the_reference() -> None:
    cfg = ScoringConfig()
    assert loss_score(cfg, math.nan, 1.0) == 0.0
    assert loss_score(cfg, math.inf, 1e300) == 0.0
    assert loss_score(cfg, 0.5, 1.0) == 1.0


def test_combine_is_zero_beyond_dist_hard_and_capped_by_hard_evidence() -> None:
    hard = ScoringConfig().dist_cutoff + 1.0
    assert combine(ScoringConfig(dist_hard=hard), hard, 1.0, 1.0, 1.0) == 0.0
    capped = combine(ScoringConfig(cap_by_hard_evidence=True), 1.0, 1.0, 1.0, 0.2)
    assert capped == 0.2
    cfg = ScoringConfig()
    mean = (cfg.w_distance * 1.0 + cfg.w_cosine * 0.0) / (cfg.w_distance + cfg.w_cosine)
    assert combine(cfg, 1.0, 1.0, 0.0, None) == pytest.approx(mean)


def test_as_vec_refuses_the_wrong_shape() -> None:
    with pytest.raises(AggregationError):
        as_vec(np.zeros((2, 2)), "x")
    with pytest.raises(AggregationError):
        as_vec(np.zeros(3), "x", 2)


def _state(founder: bool, established: bool = True, status: str = "active") -> PeerState:
    state = PeerState(1.0, established=established, founder=founder)
    state.status = status  # type: ignore[assignment]
    return state


def test_new_identities_never_set_the_spread_while_two_founders_are_candidates() -> None:
    states = {"f1": _state(True), "f2": _state(True), **{f"n{i}": _state(False, False) for i in range(6)}}
    dists = {"f1": 1.0, "f2": 1.2, **{f"n{i}": 50.0 for i in range(6)}}
    refs = references(
        LossTolerance(ScoringConfig()),
        10,
        states.__getitem__,
        after=np.zeros(2),
        centre=np.array([1.0, 0.0]),
        sane=sorted(states),
        dists=dists,
        val_losses=None,
        own_val_loss=None,
    )
    assert refs.anchors == ["f1", "f2"]
    assert refs.med == pytest.approx(1.0)  # median of 1.0, 1.2 and the own distance 1.0
    assert refs.reach == 1.2
    assert refs.med_evict == 1.2  # two founders: an eviction must hold against the farther one too
    assert refs.loss_ref is None


def test_without_established_neighbours_every_sane_one_sets_the_spread() -> None:
    states = {p: _state(False, False) for p in ("a", "b", "c")}
    refs = references(
        LossTolerance(ScoringConfig()),
        10,
        states.__getitem__,
        after=np.zeros(1),
        centre=np.zeros(1),
        sane=["a", "b", "c"],
        dists={"a": 1.0, "b": 2.0, "c": 3.0},
        val_losses=None,
        own_val_loss=None,
    )
    assert refs.anchors == ["a", "b", "c"]
    assert refs.med == 1.5  # with the own distance 0
    assert (refs.med_evict, refs.reach) == (1.5, 0.0)


def test_two_founders_that_are_copies_are_one_founder_and_the_established_set_the_spread() -> None:
    """Copies count once among the founders too: two founders publishing one model (distance 0.1 from the
    centre) must not set the spread alone; the established neighbours (one member per group) set it."""
    states = {"f1": _state(True), "f2": _state(True), "e1": _state(False), "e2": _state(False)}
    dists = {"f1": 0.1, "f2": 0.1, "e1": 3.0, "e2": 5.0}
    kw: dict[str, Any] = {
        "after": np.zeros(2),
        "centre": np.array([1.0, 0.0]),
        "sane": sorted(states),
        "dists": dists,
        "val_losses": None,
        "own_val_loss": None,
    }
    alone = references(LossTolerance(ScoringConfig()), 10, states.__getitem__, **kw)
    assert alone.anchors == ["f1", "f2"]
    groups = {"f1": "f1", "f2": "f1", "e1": "e1", "e2": "e2"}
    once = references(LossTolerance(ScoringConfig()), 10, states.__getitem__, groups=groups, **kw)
    assert once.anchors == ["e1", "e2", "f1"]
    assert once.med == pytest.approx(2.0)  # median of 3.0, 5.0, 0.1 and the own distance 1.0
