"""Contribution scoring and earned influence (pure: no I/O, no clock, no randomness).

* :mod:`.config`: :class:`ScoringConfig`, the thresholds, validated at construction.
* :mod:`.scorer`: :class:`ContributionScorer`: per-neighbour scores, reputation, standing (founder, young,
  established), exclusion and eviction.
* :mod:`.influence`: the weight caps (young ramp, young share, per-group share) and the hard rejection of
  absurd models.

The model of trust these implement is described in docs/aggregation.md ("The model of trust").
"""

from __future__ import annotations

from p2pfl.scoring.config import ScoringConfig
from p2pfl.scoring.influence import absurd, cap_groups, cap_share, ramp_cap
from p2pfl.scoring.scorer import STATUSES, ContributionScorer, ScoreRecord, Status

__all__ = [
    "STATUSES",
    "ContributionScorer",
    "ScoreRecord",
    "ScoringConfig",
    "Status",
    "absurd",
    "cap_groups",
    "cap_share",
    "ramp_cap",
]
