"""Contribution scoring and earned influence (pure: no I/O, no clock, no randomness).

* :mod:`.config`: :class:`ScoringConfig`, the thresholds, validated at construction.
* :mod:`.scorer`: :class:`ContributionScorer`: per-neighbour scores, reputation, standing (founder, young,
  established), exclusion and eviction; its evaluation's steps in :mod:`.steps`, the component scores in
  :mod:`.components`, who sets the yardsticks in :mod:`.references`, the issue-16 hooks in :mod:`.trackers`.
* :mod:`.standing`: the per-identity state, the status transitions and how a young identity earns weight.
* :mod:`.losses`: the own-data loss reference (calibrated tolerance) and loss jumps.
* :mod:`.persistence`: persistent distance (issue 16) and the scorer's hook into it.
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
