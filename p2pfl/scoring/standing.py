"""A neighbour's standing: its state, the record of one evaluation, and the transitions between statuses.

Split out of :mod:`p2pfl.scoring.scorer` (which computes the scores) so the state machine reads on its own:

* :class:`PeerState`: everything the scorer keeps per identity;
* :func:`transition`: active / excluded / evicted / probation after one scored version;
* :func:`reject_absurd`: the path of a model no honest neighbour could publish (no grace forgives it);
* :func:`pass_bars` and :func:`earn`: how a young identity earns full weight, one passing version at a time
  (docs/aggregation.md, "The model of trust").

Pure: no clock, no randomness; the scorer owns the states and calls these with its config.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from p2pfl.scoring.badrun import leak
from p2pfl.scoring.config import ScoringConfig

__all__ = [
    "STATUSES",
    "PeerState",
    "ScoreRecord",
    "Status",
    "earn",
    "pass_bars",
    "reject_absurd",
    "standing",
    "transition",
]

Status = Literal["active", "excluded", "evicted", "probation", "young"]
STATUSES: Final[tuple[Status, ...]] = ("active", "excluded", "evicted", "probation", "young")


@dataclass(frozen=True)
class ScoreRecord:
    """One neighbour's evaluation. Component scores are in ``[0, 1]`` or ``None`` when not computed."""

    peer: str
    distance: float  # raw normalised distance r = |x - centre| / median distance
    distance_score: float
    cosine: float | None  # raw cosine between the neighbour's pull and the own update
    cosine_score: float | None
    loss_score: float | None
    combined: float
    reputation: float
    status: Status
    reason: str
    #: the combined score with the mix's loss ramp (``ScoringConfig.loss_bad_mix``; never for a version
    #: whose ``combined`` is bad): what the mix acts on (the reputation, a doubted version's drop,
    #: ``drop_bad_at_once``); ``None``: ``combined``, which stays what eviction evidence is judged on
    mix_score: float | None = None

    @property
    def for_mix(self) -> float:
        """The score the mix acts on (``mix_score``, else ``combined``)."""
        return self.combined if self.mix_score is None else self.mix_score


@dataclass
class PeerState:
    """What the scorer keeps per identity."""

    reputation: float
    status: Status = "active"
    consecutive_bad: int = 0
    #: leaky bucket of bad scores (see :mod:`p2pfl.scoring.badrun`): decays instead of resetting
    bad_evidence: float = 0.0
    #: the same bucket of hard counts only (bad scores, absurd models, far and against at a loss above
    #: ``loss_ok`` times the reference): what ``evict_against_continues`` needs (p2pfl/scoring/steps.py)
    hard_evidence: float = 0.0
    probation_left: int = 0
    grace_left: int = 0
    #: founders and identities that earned it: full weight, part of the reference
    established: bool = True
    #: first heard within the founding rounds (or probation is off): anchors the spread and the loss tolerance
    founder: bool = True
    #: passes held while young (see ``ScoringConfig.young_rounds``)
    passes: int = 0
    #: the exponential moving average of its loss scores (``None`` until it has one)
    loss_rep: float | None = None
    #: absurd models so far (never reset by good ones: an identity cannot launder them)
    absurd: int = 0
    #: its recent losses on the own validation data over the own loss (at least ``loss_floor``)
    loss_ratios: list[float] = field(default_factory=list)
    #: its current version's loss ratio is ``loss_jump`` times the median of the earlier ones
    jumped: bool = False
    #: its loss ratios while it was near (``r <= dist_ok``) and scored well (``evict_near_loss``)
    near_ratios: list[float] = field(default_factory=list)

    def forgive_evidence(self) -> None:
        """Drop the eviction evidence of its earlier versions (a readmission): the run and both buckets, so
        that none of them outlives the others. Absurd models are never forgiven here."""
        self.consecutive_bad = 0
        self.bad_evidence = self.hard_evidence = 0.0

    def forgive_run(self, memory: float) -> None:
        """A grace version (a return from a silence): drop the run and the bad bucket, and let the hard
        bucket leak as any version does (``memory``, ``bad_memory``) but keep it. A lossy sign-flipper that
        went quiet for a return gap was otherwise back with no evidence and never banned (the silent escape,
        docs/scoring.md); an honest returner is far and lossy *during* its grace, which never counts, and
        honest neighbours with hard evidence were not seen in any trace."""
        self.consecutive_bad = 0
        self.bad_evidence = 0.0
        self.hard_evidence *= memory


def standing(config: ScoringConfig, reputation: float) -> Status:
    """``active`` at or above ``exclude_below``, else ``excluded``."""
    return "active" if reputation >= config.exclude_below else "excluded"


def transition(
    config: ScoringConfig, state: PeerState, bad: bool, combined: float, *, counts: bool | None = None
) -> str:
    """Move ``state`` after one scored version (``consecutive_bad`` already counted); return the reason.
    ``counts``: whether the version is bad evidence towards eviction (:func:`~p2pfl.scoring.badrun.
    corroborated`; ``None``: ``bad``), which alone ends a probation. A probation counts evaluations without
    such evidence, so a bad score too near to count advances it as a good one does (loss alone never bans,
    and the reputation it lowers still decides the weight afterwards)."""
    cfg = config
    if state.status == "probation":
        if bad if counts is None else counts:
            state.status = "evicted"
            if bad:
                return f"evicted: bad evaluation on probation (score {combined:.3f} < {cfg.bad_score})"
            # (counted though not bad: far and against the own update, steps._far_against; the rest of
            # the reason says why)
            not_bad = f"counted at score {combined:.3f}, not below {cfg.bad_score}"
            return f"evicted: bad evaluation on probation ({not_bad})"
        state.probation_left -= 1
        if state.probation_left > 0:
            near = f"bad score {combined:.3f} (too near to count towards eviction); " if bad else ""
            return f"probation: {near}{state.probation_left} evaluations without eviction evidence to go"
        state.status = standing(cfg, state.reputation)
        return f"probation passed; {state.status}"
    if state.consecutive_bad >= cfg.evict_after or state.absurd >= cfg.evict_after:
        state.status = "evicted"
        return f"evicted: {state.consecutive_bad} consecutive scores below {cfg.bad_score}"
    if state.bad_evidence >= cfg.evict_after:
        state.status = "evicted"
        return (
            f"evicted: bad evidence {state.bad_evidence:.2f} >= {cfg.evict_after} "
            f"(scores below {cfg.bad_score}, kept {cfg.bad_memory} per version)"
        )
    state.status = standing(cfg, state.reputation)
    if state.status == "excluded":
        return f"excluded: reputation {state.reputation:.3f} < {cfg.exclude_below}"
    if bad and counts is False:
        return f"active: bad score {combined:.3f} (too near to count towards eviction)"
    if bad and state.consecutive_bad == 0:
        return f"active: bad score {combined:.3f} (returning: {state.grace_left} versions of grace left)"
    if bad:
        return f"active: bad score {combined:.3f} ({state.consecutive_bad}/{cfg.evict_after} to eviction)"
    return "active"


def reject_absurd(config: ScoringConfig, state: PeerState, distance: float, *, counts: bool = True) -> str:
    """An absurd model: score 0, an offence that no grace forgives, back to the start of probation; returns
    the reason (the caller builds the record). ``counts`` False: a neighbour's gradual drift (no jump from
    its last settled versions, trusted or not) reached absurd distances
    (``ScoringConfig.evict_absurd_drift``): out of the mix and its reputation, no offence."""
    cfg = config
    state.reputation = (1.0 - cfg.ema) * state.reputation
    if not counts:
        state.status = standing(cfg, state.reputation) if state.status != "probation" else state.status
        return "rejected: absurd model (reached by gradual drift: not counted)"
    state.absurd += 1
    state.consecutive_bad += 1
    state.bad_evidence = leak(state.bad_evidence, True, cfg.bad_memory)
    state.hard_evidence = leak(state.hard_evidence, True, cfg.bad_memory)
    state.grace_left = 0
    evidence = max(state.absurd, state.consecutive_bad, state.bad_evidence)
    if state.status == "probation" or evidence >= cfg.evict_after:
        state.status = "evicted"
        reason = f"evicted: absurd model ({state.absurd} so far; distance {distance:.3g} from own)"
    else:
        state.status = standing(cfg, state.reputation)
        reason = f"rejected: absurd model ({state.absurd}/{cfg.evict_after} to eviction)"
    if not state.established:
        state.passes = 0
    return reason


def pass_bars(config: ScoringConfig, states: Iterable[PeerState]) -> tuple[float, float]:
    """The combined and loss scores a young identity's version needs to pass: ``young_pass_score``, or the
    lowest standing among the active founders minus ``young_pass_margin`` when lower (see
    :class:`ScoringConfig`)."""
    cfg = config
    # founders only: a bar set by identities that earned their standing would let each newcomer that
    # barely passed lower it for the next one
    trusted = [s for s in states if s.founder and s.status == "active"]
    reps = [s.reputation for s in trusted]
    losses = [s.loss_rep for s in trusted if s.loss_rep is not None]
    bar = cfg.young_pass_score
    loss_bar = cfg.young_pass_score
    if reps:
        bar = min(bar, min(reps) - cfg.young_pass_margin)
    if losses:
        loss_bar = min(loss_bar, min(losses) - cfg.young_pass_margin)
    return bar, loss_bar


def earn(config: ScoringConfig, state: PeerState, passed: bool, hard_fail: bool, reason: str) -> str:
    """A young identity's standing after one more version: a pass earns one step, a failure takes one
    back, a hard failure (a bad score, a loss jump, or a loss score of 0: ``loss_bad`` times the reference
    on the own data) sends it back to the start of probation."""
    if state.established or state.status not in ("active", "excluded"):
        return reason
    cfg = config
    if passed:
        state.passes += 1
    else:
        state.passes = 0 if hard_fail else max(0, state.passes - 1)
    if state.passes >= cfg.young_rounds + cfg.ramp_rounds:
        state.established = True
        return f"{reason}; established"
    return f"{reason}; young ({state.passes}/{cfg.young_rounds + cfg.ramp_rounds} passes)"
