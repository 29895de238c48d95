"""Scoring parameters: :class:`ScoringConfig`, validated at construction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from p2pfl.errors import ConfigError
from p2pfl.scoring.echo import EchoConfig
from p2pfl.scoring.heading import HeadingConfig
from p2pfl.scoring.numbers import is_real
from p2pfl.scoring.persistence import PersistenceConfig

__all__ = ["ScoringConfig"]


@dataclass(frozen=True)
class ScoringConfig:
    """Scoring parameters, validated at construction (``ConfigError("scoring", field, reason)``).

    Defaults come from the attack simulation recorded in docs/aggregation.md.
    """

    ema: float = 0.3
    initial_reputation: float = 1.0
    exclude_below: float = 0.5
    bad_score: float = 0.3
    evict_after: int = 4
    #: share of a neighbour's bad evidence kept per scored version (p2pfl/scoring/badrun.py): it is also
    #: evicted once ``evidence <- bad_memory * evidence + bad`` reaches ``evict_after``, so one good score no
    #: longer launders a run of bad ones (an attacker alternating poisoned and honest versions). With 0.93 and
    #: ``evict_after`` 4, one bad version in 3 is evicted, one in 4 tolerated. 0: consecutive bad scores only.
    #: Measured on digits, Dirichlet 0.1, 6-regular, no attack, 40 rounds (5 runs each): false evictions 6
    #: with 0.93, 7 with 0 (the old rule), 8 in 4 runs with 0.95 (docs/scoring.md).
    bad_memory: float = 0.93
    #: a bad score counts towards eviction (consecutive run and leaky bucket) only when the version's distance
    #: ratio ``r`` is at least this too, from the own mix and from the neighbours' unweighted median
    #: (p2pfl/scoring/badrun.py, ``corroborated``, ``neighbourhood_ratios``): the own-data loss and the
    #: cosine still drop a version from the mix and lower the reputation, but never ban on their own. On
    #: Dirichlet 0.1 data an honest neighbour holding other classes is confidently wrong on the own split
    #: (loss 20-80x the own, more than a sign-flipper's 5-40x) at ``r`` 2-3.6 (4.8 at most on Dirichlet 0.3,
    #: in single versions); sign-flip and Gaussian models sit at ``r`` 5-100 (docs/scoring.md, "False
    #: evictions"). ``None`` or 0: any bad score counts (the old rule).
    evict_distance: float | None = 4.0
    #: a neighbour whose first ``evict_trust_versions`` settled versions all sat below ``evict_distance`` is
    #: trusted: its gradual drift counts towards eviction only at ``evict_trusted_distance`` (``inf``, the
    #: default: never, since an honest peer dragged by a Byzantine majority of its own neighbours drifts
    #: without bound); one version beyond ``evict_distance`` and ``evict_jump`` times farther than the
    #: nearest of its last ``evict_trust_versions`` ends the trust
    #: (p2pfl/scoring/badrun.py, ``DriftTrust``; docs/scoring.md, "Drift trust"). 0: off.
    evict_trust_versions: int = 3
    evict_jump: float = 4.0
    evict_trusted_distance: float = math.inf
    #: an eviction's loss evidence is judged against the neighbour's own loss too: its median loss ratio (loss
    #: over the own) while it was near (``r <= dist_ok``) and scored well, capped by the founding tolerance,
    #: when above the current tolerance (none if it exceeds ``loss_ok`` times the founding tolerance). A peer
    #: dragged by a Byzantine majority of its neighbours (they mimic its own model, so their loss ratio ~1
    #: sets its tolerance) otherwise judges its honest neighbours, unchanged on its data, as poisoned
    #: (p2pfl/scoring/losses.py, ``near_loss_reference``; docs/scoring.md, "A dragged peer's honest
    #: neighbours"). Never for a version pulling against the own update (cosine at most ``cos_bad``), and a
    #: neighbour's first scored version records no near ratio (issue 16, nearfix: sign-flippers bought the
    #: excuse so) unless it pulls along the own update (``near_first_cos``). False: the crowd's tolerance
    #: alone.
    evict_near_loss: bool = True
    #: a neighbour's first scored version records its near ratio when its cosine with the own update is at
    #: least this (``inf``: never, nearfix's rule). In the same-round order (``wait_before_mix``) an honest
    #: peer's first version is trained from the shared initial model before any neighbour's model reaches
    #: it: the one version a Byzantine majority of its own neighbours cannot have dragged. Without it, a
    #: peer dragged from its second version on had no near history at its honest neighbour and was banned
    #: there (issue 16, rr4 Gaussian). In that order sign-flippers' first versions pulled at cosine 0.22 at
    #: most (those near and clean enough to record: 0.07), honest ones at 0.08-0.25 median; in the old
    #: order every first version measured pulled against it (honest -0.04 at most): the rule never fires.
    near_first_cos: float = 0.2
    #: a version that scores too well to count still counts towards eviction when it is far (``r`` at least
    #: ``evict_distance`` from both centres), pulls against the own update (cosine at most ``cos_bad``) and
    #: costs the own data more than ``evict_far_against_loss`` times the eviction loss reference: a
    #: sign-flipper in the founding rounds, on IID data, whose loss was only 2-9x the own
    #: (p2pfl/scoring/steps.py, ``_far_against``; docs/scoring.md, "nearfix"). False: the combined score
    #: alone.
    evict_far_against: bool = True
    #: that loss bar, in multiples of the eviction loss reference (nearfix had ``loss_ok``, 3; at least 1):
    #: the own loss times the calibrated tolerance (the anchors' median loss over the own, capped after
    #: the founding rounds at ``loss_tolerance_margin`` times the founding tolerance; the neighbour's near
    #: ratio when higher; p2pfl/scoring/losses.py). 2: the marginal flipper cost 2.5-2.8x, honest
    #: neighbours keep a margin (order17r; 1 counted a laggard's one version at 1.04x)
    evict_far_against_loss: float = 2.0
    #: ... or, whatever its loss, while the neighbour's *hard* evidence (bad scores, absurd models, far and
    #: against above ``loss_ok`` times the reference; ``PeerState.hard_evidence``) holds a whole counted
    #: version: far and against add to bad evidence, never start it. A sign-flipper keeps its direction
    #: after the model has converged and its flipped update no longer costs the own data anything (the
    #: same-round order, ``wait_before_mix``); an honest laggard on a converged trajectory is as far and as
    #: anti-aligned, with no hard evidence (p2pfl/scoring/steps.py, ``_far_against``; docs/scoring.md,
    #: "Against, after the loss is gone"). False: the loss is always needed. Without
    #: ``evict_far_against`` it does nothing.
    evict_against_continues: bool = True
    #: the loss *score* of a neighbour's version is judged against that same reference too (its median near
    #: ratio, capped by the founding tolerance, when above the current tolerance), not only an eviction's
    #: loss evidence. On a clustered graph a clique's members agree so closely that the crowd's tolerance
    #: falls to ~1.4 by round 20 while an honest bridge neighbour, which carries the other clique's classes,
    #: stays at 7-12 times the own loss: scored doubtful version after version, it was left out of the mix
    #: that needed it (issue 16, dumbbell seed 2; docs/scoring.md, "Judging a clustered graph's bridges").
    #: Off by default (measured on the dumbbell only: simulations/scenarios/clustered_two_steps.toml).
    loss_near_score: bool = False
    #: an extra mixing step's versions (``mix_steps``, mostly the neighbours' mixes) feed the echo and
    #: persistence histories as trained versions do. False: only trained versions feed them (their factors
    #: still apply to every version): on a clustered graph a clique's mixes agree so closely that an honest
    #: bridge's mix sits at r 3-6 among them, and its echo (a geometry that holds for trained models only)
    #: held 145 of 186 of its mixes at a bridge's own neighbours (issue 16, dumbbell seed 2). Kept True by
    #: default: on a 4-regular graph at Dirichlet 0.3 with 25 % label-flippers (the clustered preset, seed 2)
    #: the honest minimum fell from 75.8 % to 25.9 % without the mixes' echo and persistence
    #: (docs/scoring.md).
    histories_from_mixes: bool = True
    #: an absurd model (``hard_reject_factor``) whose distance is no jump (``evict_jump``) from the
    #: neighbour's last ``evict_trust_versions`` settled ones (from the own mix's centre or the plain median)
    #: is rejected but does not count towards eviction when this is False: an honest peer dragged by a
    #: Byzantine majority of its own neighbours drifts until its models are absurd at its honest neighbours
    #: (issue 16, rr6 dissensus seed 3, rr4 seed 4). Non-finite models and any jump still count. True: the
    #: old rule.
    evict_absurd_drift: bool = False
    #: neighbours whose models are at most this many own-update lengths apart (or lengths of the lower
    #: quartile of each model's nearest distance, when that is smaller; a chain of such pairs too) are
    #: copies of one model and set the yardsticks (the anchors' spread and loss tolerance, the plain
    #: median's centre and spread) as one model: mimic attackers copying a peer's own model made three of
    #: its six anchors, collapsed its spread and tolerance and got its honest neighbour banned (issue 16,
    #: digits Dirichlet 0.1 rr6 mimic seed 2). The closest honest pair measured was 0.21 apart in that
    #: unit (p2pfl/scoring/copies.py; docs/scoring.md, "Copies count once"). Every copy is still scored on
    #: its own. 0: off.
    copies_ratio: float = 0.01
    #: in the mix too, a group of copies (``copies_ratio``) weighs as its heaviest member alone
    #: (p2pfl/scoring/copies.py, ``share_copies``; applied by the protocol's round). Off by default: in the
    #: Dirichlet 0.1 mimic cells it lifted the honest minimum (46.4 -> 56.0 % over the 12 of 32 cells it
    #: changed) at a mean of 74.7 -> 74.6, and it reweighs any mix whose neighbours publish one model
    #: (docs/scoring.md, "Copies count once").
    copies_mix_once: bool = False
    probation_length: int = 3
    probation_reputation: float = 0.5
    dist_ok: float = 2.0
    dist_cutoff: float = 5.0
    #: ``r >= dist_hard`` makes the combined score 0 whatever the other components say (``None``: off).
    #: Measured on Dirichlet(0.3) digits: honest neighbours reach r 6.8 at most, Gaussian models sit at 10-30
    #: yet keep a fine loss on a skewed validation split, which averaged their distance score away. Off by
    #: default: a peer restarted from an old checkpoint, or joining late, is that far from a converged
    #: neighbourhood too, and was evicted by its honest neighbours in a registry-outage test (2 of 3 runs).
    dist_hard: float | None = None
    cos_ok: float = 0.0
    cos_bad: float = -0.5
    loss_ok: float = 3.0
    loss_bad: float = 10.0
    #: where the loss score reaches 0 in the score the *mix* acts on (the reputation, so exclusion; a
    #: doubted version's drop; ``drop_bad_at_once``), if not at ``loss_bad`` (``None``), for a version
    #: not bad (``bad_score``) by the eviction's score. Eviction evidence and a young identity's hard
    #: failure keep ``loss_bad``. Why: on Dirichlet 0.1 honest neighbours holding few of the peer's
    #: classes cost its validation data several times the reference (digits, rr4, no attack: 8 % of
    #: their versions above 3, 1 % above 10); the steeper ramp dropped them from the mix (``drop_below``)
    #: and the peer learnt from fewer neighbours (docs/scoring.md, "Two loss ramps"). Moving ``loss_bad``
    #: itself bought the same accuracy but evicted the default scenario's sign-flippers later.
    loss_bad_mix: float | None = 20.0
    #: the loss reference never goes below this (in the learner's loss unit; the default suits cross-entropy
    #: in nats). Without it, the longer honest peers trained the smaller the reference got, and an honest
    #: skewed neighbour's loss of ~1 nat against a reference of ~0.1 read as poisoned. Measured without
    #: attackers at a constant learning rate: 6-7 false evictions in 300 rounds, 10 in 600; with 0.25, 0 and
    #: 2; with 0.5, 0 and 1, but the default scenario's sign-flippers were then evicted by 8 of 12 honest
    #: observers (mean round 22) instead of 12 of 12 (round 8; 0.25 keeps that). 0 turns it off.
    loss_floor: float = 0.25
    #: a neighbour's model that assigns at least this share of the own validation samples to one class the
    #: own split lacks is a *specialist* (an honest peer holding that class alone answers it to everything:
    #: p2pfl/scoring/specialist.py); ``None``: nobody is. Its bad scores do not count towards eviction
    #: while its distance ratio stays below ``specialist_distance``; it still gets no weight from them.
    specialist_share: float | None = None
    specialist_distance: float = 8.0
    w_distance: float = 1.0
    w_cosine: float = 0.5
    w_loss: float = 2.0
    use_val_loss: bool = True
    weighting: Literal["binary", "reputation"] = "binary"
    cap_by_hard_evidence: bool = False
    #: leave a neighbour scored below ``bad_score`` out of the very mix it was scored against (the peer
    #: aggregates again without it), instead of only lowering its reputation for later rounds
    drop_bad_at_once: bool = True
    #: with ``drop_bad_at_once``, after the founding rounds, a version with an own-data loss score below 1 or
    #: a distance ratio above ``dist_ok`` leaves the very mix it was scored against when its combined score
    #: is below this (``ContributionScorer.doubted``; only scores below ``bad_score`` count towards
    #: eviction). Measured on sybil_sleeper: sign-flipping sleepers scored 0.35-0.45 for 2-4 rounds after
    #: turning (loss score 0, distance and cosine middling) until their reputation fell below
    #: ``exclude_below``, and were mixed all that time. Honest neighbours score in [0.3, 0.6) in 0.9% of
    #: attacks16's records (Dirichlet 0.3) and none of sybil_sleeper's; at 0.8 (4%) attacks16 lost 0.5 points.
    drop_below: float = 0.6
    #: with ``drop_bad_at_once``, after the founding rounds, a version whose loss on the own validation data
    #: (over the own loss) is more than ``loss_jump`` times the median of the same identity's earlier ones
    #: leaves the very mix it was scored against too (not counted towards eviction). Measured per
    #: observer-neighbour pair: honest jumps reach 2.35 at the 99th percentile (max 3.8) on sybil_sleeper
    #: and 2.34 (max 7.5) on attacks16 (Dirichlet 0.3); sleepers' first flipped versions jump a median 5.5.
    #: ``None``: off.
    loss_jump: float | None = 3.0
    #: what distances are measured from: ``aggregate`` (the mix itself; robust under the default
    #: geomed and the trusted-mean rules) or ``median`` (coordinate-wise, over the own trained model and
    #: every candidate), which attackers cannot drag along when the rule is a plain mean
    #: (simulations/scenarios/attacks16.toml uses it)
    reference: Literal["median", "aggregate"] = "aggregate"
    #: A neighbour heard again after ``return_gap_rounds`` own rounds of silence (restarted, reconnected, or
    #: first heard only then: it joined late) gets ``return_grace`` versions whose bad scores do not count
    #: towards eviction: the neighbourhood converged without its data, so its first trained versions are far
    #: off however honest it is (measured: a peer restarted after ~30 of its neighbours' rounds scored r 10-20
    #: for 6 versions, then r 1.0). A bad version still leaves the mix at once and lowers the reputation, so
    #: the grace lets no poison in; it only delays an eviction. Peers heard from the first rounds get none.
    #: Hard evidence from before the silence is kept (leaking per version): no count within the grace, but
    #: a lossy poisoner cannot wipe its record by going quiet (docs/scoring.md, "The silent escape").
    return_grace: int = 8
    return_gap_rounds: int = 5
    #: -- earned influence (docs/aggregation.md, "The model of trust") --
    #: identities first heard, or first in contact (connected and subscribed: ``ContributionScorer.contact``,
    #: which the peer calls each round), within the scorer's first ``founding_rounds`` own rounds are
    #: *founders*: established at once (at network start every neighbour is new, and starving them all stalls
    #: learning). By contact too, so a peer slow from its first round is no newcomer: first heard after the
    #: founding rounds it was young, and its stale versions never passed (weight 0 all run in 44 of 44 and 73
    #: of 77 versions, simulations/benchmarks-matrix.md, young16). A Sybil silent while in contact gains
    #: nothing it could not by publishing one honest-looking version then (docs/scoring.md, "Founders by
    #: contact").
    #: Later identities are *young*: scored, but mixed with weight 0 until they hold ``young_rounds`` passes
    #: (versions that pass the own checks), then with a cap growing by ``1 / (ramp_rounds + 1)`` per pass;
    #: with ``young_rounds + ramp_rounds`` passes they are established. A version that fails the checks takes
    #: one pass back; one scored below ``bad_score``, absurd, or whose loss jumped takes them all (honest
    #: non-IID newcomers fail the bar now and then: requiring consecutive passes kept one young for 200+
    #: rounds; an identity that fails as often as it passes still never progresses). ``young_rounds = 0``
    #: turns probation off (every identity is established when first heard: closed networks, whose roster
    #: grants membership, may choose this).
    founding_rounds: int = 5
    young_rounds: int = 3
    ramp_rounds: int = 5
    #: the young identities together hold at most this share of any mix (the own model and the established
    #: neighbours hold the rest), however many of them there are
    young_share_cap: float = 0.2
    #: the newcomers (every identity that is not a founder: young, or established by earning it) together
    #: hold at most this share of any mix and of the reference, however many they are: Sybils patient enough
    #: to earn establishment, or an ALIE model that passes every check, cannot become the robust centre.
    #: Below 1/2, the geometric median's breakdown point. The price: honest late joiners together weigh at
    #: most this much too, and once every founder has left the own model holds the rest of each mix.
    newcomer_share_cap: float = 0.3
    #: a young identity's version passes when its combined score is at least this, its loss score too (when
    #: there is one) and its distance ratio (to the centre of the own model and established neighbours) is
    #: at most ``dist_ok``, or its distance at most a trusted founder's
    young_pass_score: float = 0.7
    #: ...or, when lower, the standing of the neighbours the peer trusted first: the lowest reputation (and
    #: loss-score average) among its active founders, minus this margin (founders only: a bar that identities
    #: which earned their standing could lower would sink one newcomer at a time). On very non-IID data an
    #: honest late joiner is as far from the own data as the honest founders are, and scored as they do: in a
    #: 5-peer Dirichlet(0.5) network two honest late joiners scored 0.58-0.71 (loss score ~0.5) against a
    #: founder's 0.70, never passed the fixed bar, and were mixed with weight 0 for 200+ rounds. A model no
    #: better than the worst trusted neighbour earns weight no faster than the caps allow.
    young_pass_margin: float = 0.1
    #: hard rejection: a model farther from the own trained model than ``hard_reject_factor`` times the
    #: larger of the own model's norm and the established neighbours' median distance (or not finite) scores
    #: 0 at once, is never mixed, and counts towards eviction with no grace (``None``: off)
    hard_reject_factor: float | None = 10.0
    #: the loss reference is the own validation loss (at least ``loss_floor``) times a tolerance, the
    #: founders' (or established neighbours') median loss over it, clamped to ``[1, loss_tolerance_max]``:
    #: non-IID honest neighbours are 3-20x worse than the own model on the own split, and no crowd of new
    #: identities can move the reference
    loss_tolerance_max: float = 20.0
    #: after the founding rounds the tolerance never exceeds ``loss_tolerance_margin`` times the largest one
    #: calibrated within them (it falls and recovers freely below that ceiling): founders that behave for the
    #: founding window and then turn together (sleepers, half of every neighbourhood) lifted the founders'
    #: median loss 3-10x, so their own 30x-worse losses read as 3x the reference. ``None``: no ceiling.
    loss_tolerance_margin: float | None = 1.0
    #: -- persistent distance (issue 16; p2pfl/scoring/persistence.py, docs/scoring.md) --
    #: judge each neighbour by the smallest normalised distance ``r`` of its last ``persist_window`` scored
    #: versions: its mixing weight falls linearly from 1 at ``persist_soft`` to 0 at ``persist_hard``.
    #: Holds out models that stay far version after version (label-flip) though each single version sits
    #: inside the honest per-round spread. Off: ``persistent_distance = False``. 3 / 4 rather than 2 / 3: at
    #: Dirichlet 0.1 honest neighbours reach ``r`` 2.5 (docs/scoring.md, "Why these thresholds").
    persistent_distance: bool = True
    persist_window: int = 4
    persist_soft: float = 3.0
    persist_hard: float = 4.0
    #: with a full window at or beyond ``persist_hard`` a version also scores 0 (towards eviction). Off by
    #: default: on a dumbbell with Dirichlet(0.1) data honest peers holding one or two classes stay that far
    #: too, and were evicted by 3 honest observers in a run without attackers (5 more by the other rules)
    persist_evict: bool = False
    #: the signal is off for a round whose median distance rests on fewer than this many distances (the
    #: anchors' and the own model's): in tiny neighbourhoods the ratio is too noisy to judge persistence
    persist_min_spread: int = 5
    #: -- echo (issue 16; p2pfl/scoring/echo.py, docs/scoring.md) --
    #: after the founding rounds, a neighbour whose model lies beyond the own trained model along the own
    #: update (``cos(x_i - own_after, own_after - own_before)``) loses mixing weight: 1 at ``echo_ok``, 0 at
    #: ``echo_bad``. Holds out dissensus models aimed at this peer. Off: ``echo = False``. A neighbour
    #: whose loss on the own validation data is below ``echo_ahead`` times the own trained model's keeps its
    #: weight (0: never): the own data prefer it, it is where the own training heads (IID, attacker majority)
    echo: bool = True
    echo_ok: float = EchoConfig.ok
    echo_bad: float = EchoConfig.bad
    echo_ahead: float = EchoConfig.ahead
    #: -- heading (issue 16; p2pfl/scoring/heading.py, docs/scoring.md) --
    #: after the founding rounds, a neighbour whose offset from the centre keeps pointing against the
    #: centre's motion (lag: IPM) or along minus the neighbours' per-coordinate spread (shift: ALIE) loses
    #: mixing weight (1 at ``*_ok``, 0 at ``*_bad``, smoothed by ``heading_memory``); never evicts
    heading: bool = True
    heading_lag_ok: float = HeadingConfig.lag_ok
    heading_lag_bad: float = HeadingConfig.lag_bad
    heading_shift_ok: float = HeadingConfig.shift_ok
    heading_shift_bad: float = HeadingConfig.shift_bad
    heading_memory: float = HeadingConfig.memory
    #: the lag test (IPM) weighs only when on, and only while at most ``heading_lag_share`` of the sane
    #: neighbours lag and the own trained model keeps up with the centre (heading_lag_own_ok): otherwise
    #: dissensus drags the own centre (docs/scoring.md)
    heading_lag: bool = HeadingConfig.lag
    heading_lag_share: float = HeadingConfig.lag_share
    heading_lag_own_ok: float = HeadingConfig.lag_own_ok
    #: ... and up to ``heading_lag_firm_share`` may lag while the own model's smoothed lag is at least
    #: ``heading_lag_firm_own`` (clearly ahead: the laggers are behind it, not the centre off course)
    heading_lag_firm_share: float = HeadingConfig.lag_firm_share
    heading_lag_firm_own: float = HeadingConfig.lag_firm_own
    #: a neighbour the lag test brought to 0 stays there until its smoothed lag rises to this (hysteresis)
    heading_lag_release: float = HeadingConfig.lag_release

    def heading_config(self) -> HeadingConfig:
        """The :class:`~p2pfl.scoring.heading.HeadingConfig` the ``heading_*`` fields describe."""
        return HeadingConfig(
            lag_ok=self.heading_lag_ok,
            lag_bad=self.heading_lag_bad,
            shift_ok=self.heading_shift_ok,
            shift_bad=self.heading_shift_bad,
            memory=self.heading_memory,
            lag=self.heading_lag,
            lag_share=self.heading_lag_share,
            lag_own_ok=self.heading_lag_own_ok,
            lag_firm_share=self.heading_lag_firm_share,
            lag_firm_own=self.heading_lag_firm_own,
            lag_release=self.heading_lag_release,
        )

    def echo_config(self) -> EchoConfig:
        """The :class:`~p2pfl.scoring.echo.EchoConfig` the ``echo_*`` fields describe."""
        return EchoConfig(self.echo_ok, self.echo_bad, self.echo_ahead)

    def persistence(self) -> PersistenceConfig:
        """The :class:`~p2pfl.scoring.persistence.PersistenceConfig` these ``persist_*`` fields describe."""
        return PersistenceConfig(self.persist_window, self.persist_soft, self.persist_hard)

    def __post_init__(self) -> None:
        unit = (
            "ema",
            "initial_reputation",
            "exclude_below",
            "bad_score",
            "probation_reputation",
            "drop_below",
        )
        for name in unit:
            value = getattr(self, name)
            if not is_real(value) or not 0.0 <= value <= 1.0:
                raise ConfigError("scoring", name, f"must be a number in [0, 1], got {value!r}")
        memory = self.bad_memory
        if not is_real(memory) or not 0.0 <= memory < 1.0:
            raise ConfigError("scoring", "bad_memory", f"must be a number in [0, 1), got {memory!r}")
        if self.ema == 0.0:
            raise ConfigError("scoring", "ema", "must be > 0, or reputations never move")
        for name in ("founding_rounds", "young_rounds", "ramp_rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError("scoring", name, f"must be an integer >= 0, got {value!r}")
        if not is_real(self.copies_ratio) or not 0.0 <= self.copies_ratio < 1.0:
            raise ConfigError(
                "scoring", "copies_ratio", f"must be a number in [0, 1), got {self.copies_ratio!r}"
            )
        for name in ("young_share_cap", "newcomer_share_cap", "young_pass_score", "young_pass_margin"):
            value = getattr(self, name)
            if not is_real(value) or not 0.0 <= value <= 1.0:
                raise ConfigError("scoring", name, f"must be a number in [0, 1], got {value!r}")
        factor = self.hard_reject_factor
        if factor is not None and (not is_real(factor) or factor <= 1.0):
            raise ConfigError(
                "scoring", "hard_reject_factor", f"must be None or a number > 1, got {factor!r}"
            )
        margin = self.loss_tolerance_margin
        if margin is not None and (not is_real(margin) or margin < 1.0):
            raise ConfigError(
                "scoring", "loss_tolerance_margin", f"must be None or a number >= 1, got {margin!r}"
            )
        jump = self.loss_jump
        if jump is not None and (not is_real(jump) or jump <= 1.0):
            raise ConfigError("scoring", "loss_jump", f"must be None or a number > 1, got {jump!r}")
        if not is_real(self.loss_tolerance_max) or self.loss_tolerance_max < 1.0:
            raise ConfigError(
                "scoring", "loss_tolerance_max", f"must be a number >= 1, got {self.loss_tolerance_max!r}"
            )
        for name in ("evict_after", "probation_length", "return_gap_rounds", "persist_min_spread"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError("scoring", name, f"must be an integer >= 1, got {value!r}")
        grace = self.return_grace
        if isinstance(grace, bool) or not isinstance(grace, int) or grace < 0:
            raise ConfigError("scoring", "return_grace", f"must be an integer >= 0, got {grace!r}")
        if not is_real(self.dist_cutoff) or not 1.0 < self.dist_cutoff < math.inf:
            raise ConfigError(
                "scoring", "dist_cutoff", f"must be a finite number > 1, got {self.dist_cutoff!r}"
            )
        evict_distance = self.evict_distance
        if evict_distance is not None and (
            not is_real(evict_distance) or not 0.0 <= evict_distance < math.inf
        ):
            raise ConfigError(
                "scoring", "evict_distance", f"must be None or a finite number >= 0, got {evict_distance!r}"
            )
        trust = self.evict_trust_versions
        if isinstance(trust, bool) or not isinstance(trust, int) or trust < 0:
            raise ConfigError("scoring", "evict_trust_versions", f"must be an integer >= 0, got {trust!r}")
        if not is_real(self.evict_jump) or not 1.0 < self.evict_jump < math.inf:
            raise ConfigError("scoring", "evict_jump", f"must be a number > 1, got {self.evict_jump!r}")
        far = self.evict_trusted_distance
        if not (is_real(far) or far == math.inf) or not (evict_distance or 0.0) <= far:
            raise ConfigError(
                "scoring",
                "evict_trusted_distance",
                f"must be a number >= evict_distance (inf: never), got {far!r}",
            )
        hard = self.dist_hard
        if hard is not None and (not is_real(hard) or hard <= self.dist_cutoff):
            raise ConfigError("scoring", "dist_hard", f"must be None or a number > dist_cutoff, got {hard!r}")
        if not is_real(self.dist_ok) or not 0.0 < self.dist_ok < self.dist_cutoff:
            raise ConfigError("scoring", "dist_ok", f"must be in (0, dist_cutoff), got {self.dist_ok!r}")
        if not (is_real(self.cos_ok) and is_real(self.cos_bad) and -1.0 <= self.cos_bad < self.cos_ok <= 1.0):
            raise ConfigError(
                "scoring",
                "cos_bad/cos_ok",
                f"need -1 <= cos_bad < cos_ok <= 1, got {self.cos_bad!r}, {self.cos_ok!r}",
            )
        if not (
            is_real(self.loss_ok) and is_real(self.loss_bad) and 0 < self.loss_ok < self.loss_bad < math.inf
        ):
            raise ConfigError(
                "scoring",
                "loss_ok/loss_bad",
                f"need 0 < loss_ok < loss_bad < inf, got {self.loss_ok!r}, {self.loss_bad!r}",
            )
        mix_bad = self.loss_bad_mix
        if mix_bad is not None and not (is_real(mix_bad) and self.loss_ok < mix_bad < math.inf):
            raise ConfigError(
                "scoring", "loss_bad_mix", f"must be None or a number above loss_ok, got {mix_bad!r}"
            )
        first_cos = self.near_first_cos
        if not (is_real(first_cos) or first_cos == math.inf) or not first_cos >= -1.0:
            raise ConfigError(
                "scoring", "near_first_cos", f"must be a number >= -1 (inf: never), got {first_cos!r}"
            )
        if not is_real(self.evict_far_against_loss) or not 1.0 <= self.evict_far_against_loss < math.inf:
            bar = self.evict_far_against_loss  # (under the reference itself an honest neighbour counts)
            raise ConfigError("scoring", "evict_far_against_loss", f"must be a number >= 1, got {bar!r}")
        share = self.specialist_share
        if share is not None and not (is_real(share) and 0.5 < share <= 1.0):
            raise ConfigError("scoring", "specialist_share", f"must be None or in (0.5, 1], got {share!r}")
        if not is_real(self.specialist_distance) or not self.specialist_distance >= 0.0:
            bound = self.specialist_distance
            raise ConfigError("scoring", "specialist_distance", f"must be a number >= 0, got {bound!r}")
        for name in ("w_distance", "w_cosine", "w_loss", "loss_floor"):
            value = getattr(self, name)
            if not is_real(value) or not 0.0 <= value < math.inf:
                raise ConfigError("scoring", name, f"must be a finite number >= 0, got {value!r}")
        if self.w_distance + self.w_cosine + self.w_loss == 0:
            raise ConfigError(
                "scoring", "w_distance/w_cosine/w_loss", "at least one component weight must be > 0"
            )
        for name in (
            "use_val_loss",
            "cap_by_hard_evidence",
            "drop_bad_at_once",
            "persistent_distance",
            "persist_evict",
            "echo",
            "heading",
            "evict_near_loss",
            "evict_far_against",
            "evict_against_continues",
            "loss_near_score",
            "histories_from_mixes",
            "evict_absurd_drift",
            "copies_mix_once",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError("scoring", name, f"must be a bool, got {getattr(self, name)!r}")
        if self.loss_near_score and not self.evict_near_loss:  # (it reads that near history)
            raise ConfigError("scoring", "loss_near_score", "needs evict_near_loss = true")
        self.persistence()  # validates persist_window / persist_soft / persist_hard
        self.echo_config()  # validates echo_ok / echo_bad / echo_ahead
        self.heading_config()  # validates heading_*
        if self.reference not in ("median", "aggregate"):
            raise ConfigError(
                "scoring", "reference", f"must be 'median' or 'aggregate', got {self.reference!r}"
            )
        if self.weighting not in ("binary", "reputation"):
            raise ConfigError(
                "scoring", "weighting", f"must be 'binary' or 'reputation', got {self.weighting!r}"
            )
