"""The steps of one evaluation: check the inputs, score each neighbour's version, count eviction evidence.

Split out of :mod:`p2pfl.scoring.scorer` so that :meth:`~p2pfl.scoring.scorer.ContributionScorer.evaluate`
reads as the order of its steps (each under a screen) while the scorer keeps the per-identity book: its
queries, weights and transitions. :class:`ScoringSteps` is a base of the scorer (as the engine's sides are of
:class:`~p2pfl.protocol.engine.GossipEngine`); the arithmetic is in :mod:`~p2pfl.scoring.components`, the
yardsticks in :mod:`~p2pfl.scoring.references`, the standing's transitions in :mod:`~p2pfl.scoring.standing`.
One call's checked inputs and yardsticks travel between the steps as a :class:`Call`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from p2pfl.scoring.badrun import corroborated, leak, neighbourhood_ratios
from p2pfl.scoring.components import as_vec, combine, cosine_score, distance_ratio, loss_score, ramp_down
from p2pfl.scoring.copies import copy_groups, distinct
from p2pfl.scoring.losses import LossTolerance, near_loss_reference, record_near, track_jump
from p2pfl.scoring.persistence import persistence_reason
from p2pfl.scoring.references import References, references
from p2pfl.scoring.standing import PeerState, ScoreRecord, Status, earn, pass_bars, transition
from p2pfl.scoring.trackers import TrackerHooks

__all__ = ["Call", "ScoringSteps"]


@dataclasses.dataclass
class Call:
    """One :meth:`~p2pfl.scoring.scorer.ContributionScorer.evaluate` call's checked inputs and yardsticks."""

    before: NDArray[np.float64]
    after: NDArray[np.float64]
    own_update: NDArray[np.float64]
    own_norm: float
    models: dict[str, NDArray[np.float64]]
    #: the absurd models, with their distance from the own trained model
    rejected: dict[str, float]
    sane: list[str]
    dists: dict[str, float]
    refs: References
    val_losses: Mapping[str, float] | None
    own_val_loss: float | None
    #: the reference centre the distances ``dists`` are measured from
    centre: NDArray[np.float64] | None = None
    #: badrun.neighbourhood_ratios, computed when first needed
    plain: dict[str, float] | None = None
    #: the versions come to an extra mixing step (p2pfl.protocol.mixing): mostly the neighbours' mixes,
    #: which the trained-version histories (persistence, echo) do not judge (``ContributionScorer.evaluate``)
    extra_step: bool = False
    #: each sane neighbour's group of copies (p2pfl/scoring/copies.py): one group sets a yardstick once
    groups: dict[str, str] = dataclasses.field(default_factory=dict)
    #: the neighbours whose model answers one class the own validation split lacks
    #: (p2pfl/scoring/specialist.py), as the caller found them
    specialists: frozenset[str] = frozenset()


class ScoringSteps(TrackerHooks):
    """The steps of :meth:`~p2pfl.scoring.scorer.ContributionScorer.evaluate` (a base of the scorer)."""

    #: the scorer's per-identity state
    _peers: dict[str, PeerState]
    #: the loss tolerance calibrated on the anchors (the scorer's)
    _tolerance: LossTolerance

    if TYPE_CHECKING:  # the scorer's (p2pfl.scoring.scorer.ContributionScorer)

        def status(self, peer: str) -> Status: ...

        def absurd(self, own_after: ArrayLike, neighbours: Mapping[str, ArrayLike]) -> dict[str, float]: ...

    def _prepare(  # noqa: PLR0917 - evaluate's arguments, in its order
        self,
        own_before: ArrayLike,
        own_after_local_training: ArrayLike,
        neighbours: Mapping[str, ArrayLike],
        centre: ArrayLike,
        val_losses: Mapping[str, float] | None,
        own_val_loss: float | None,
        *,
        extra_step: bool = False,
        specialists: Collection[str] = (),
    ) -> Call:
        """Check the shapes, set the absurd models apart and set the yardsticks
        (:mod:`~p2pfl.scoring.references`). Copies count once (:mod:`~p2pfl.scoring.copies`), in trained
        versions only: an extra mixing step's versions are mostly mixes, which in a clique agree closely and
        were not measured against the bound."""
        before = as_vec(own_before, "own_before")
        d = before.shape[0]
        after = as_vec(own_after_local_training, "own_after_local_training", d)
        ctr = as_vec(centre, "centre", d)
        models = {p: as_vec(neighbours[p], f"neighbours[{p!r}]", d) for p in sorted(neighbours)}
        own_update = after - before
        own_norm = float(np.linalg.norm(own_update))

        scored = [p for p in models if self._state(p).status != "evicted"]
        rejected = self.absurd(after, {p: models[p] for p in scored})
        sane = [p for p in scored if p not in rejected]
        dists = {p: float(np.linalg.norm(models[p] - ctr)) for p in sane}
        groups = self.copies({p: models[p] for p in sane}, own_norm, extra_step=extra_step)
        refs = references(
            self._tolerance,
            self.rounds,
            self._state,
            after=after,
            centre=ctr,
            sane=sane,
            dists=dists,
            val_losses=val_losses,
            own_val_loss=own_val_loss,
            groups=groups,
        )
        return Call(
            before,
            after,
            own_update,
            own_norm,
            models,
            rejected,
            sane,
            dists,
            refs,
            val_losses,
            own_val_loss,
            centre=ctr,
            extra_step=extra_step,
            groups=groups,
            specialists=frozenset(specialists),
        )

    def copies(
        self, sane: Mapping[str, NDArray[np.float64]], own_norm: float, *, extra_step: bool = False
    ) -> dict[str, str]:
        """The groups of copies among the ``sane`` (not absurd) candidates' models, ``own_norm`` the own
        update's length (:func:`~p2pfl.scoring.copies.copy_groups`): what the yardsticks count once, and
        what the protocol's mix weighs once (``copies_mix_once``). None in an extra mixing step: its versions
        are mostly mixes, which in a clique agree closely and were not measured against the bound."""
        return copy_groups(sane, own_norm, 0.0 if extra_step else self.config.copies_ratio)

    def _score(
        self,
        call: Call,
        p: str,
        model: NDArray[np.float64],
        state: PeerState,
        young: dict[str, tuple[bool, bool]],
    ) -> ScoreRecord:
        """Score one sane neighbour's version, update its reputation and standing; a young one's pass is
        judged after the loop (``young``), once every trusted neighbour's standing is updated."""
        cfg = self.config
        first = state.loss_rep is None  # its first version with a loss (nearfix: no near ratio from it)
        r, s_dist, cosine, s_cos, s_loss, q = self._components(call, p, model, state)
        combined = self._combine(r, s_dist, s_cos, s_loss)
        # the score the mix acts on: its loss ramp may reach 0 later than the eviction evidence's, except
        # for a version bad by the eviction's score (a sign-flipper kept in the mix moves the centre its
        # distance is judged from: the 5-peer same-round run, seed 4, banned it by round 8 instead of 5)
        combined_mix = combined
        if q is not None and cfg.loss_bad_mix is not None and combined >= cfg.bad_score:
            combined_mix = self._combine(r, s_dist, s_cos, ramp_down(q, cfg.loss_ok, cfg.loss_bad_mix))
        if call.extra_step and not self.config.histories_from_mixes:  # trained versions' histories only
            far = self.persistence is not None and self.persistence.far(p)
        else:
            far = self._persistently_far(p, state, r, len(call.refs.anchors) + 1)  # issue 16
            self._observe_echo(  # issue 16
                p,
                model,
                call.after,
                call.own_update,
                val_losses=call.val_losses,
                own_val_loss=call.own_val_loss,
            )
        persistent = far and cfg.persist_evict
        if persistent:
            combined = combined_mix = 0.0
        state.reputation = (1.0 - cfg.ema) * state.reputation + cfg.ema * combined_mix
        bad = combined < cfg.bad_score
        if self._records_near(call, p, first=first, r=r, s_loss=s_loss, bad=bad, cosine=cosine):
            record_near(cfg, state, float(call.val_losses[p]), call.own_val_loss)  # type: ignore[index]
        counts, against, hard = self._counts(
            call, p, state, combined, r, s_cos=s_cos, s_loss=s_loss, bad=bad, persistent=persistent
        )
        if state.grace_left > 0:
            state.grace_left -= 1
            state.forgive_run(cfg.bad_memory)
            against = ""  # (the grace discarded the count)
        else:
            state.consecutive_bad = state.consecutive_bad + 1 if counts else 0
            state.bad_evidence = leak(state.bad_evidence, counts, cfg.bad_memory)
            state.hard_evidence = leak(state.hard_evidence, counts and hard, cfg.bad_memory)
        reason = transition(cfg, state, bad, combined, counts=counts)
        if against:
            reason = f"{reason}; counted: far, against the own update, {against}"
        if persistent:
            reason = f"{reason}; {persistence_reason(cfg.persistence())}"
        if not state.established:
            near = r <= cfg.dist_ok or call.dists[p] <= call.refs.reach
            young[p] = (near, bad or state.jumped or s_loss == 0.0)
        mix_score = None if combined_mix == combined else combined_mix
        return ScoreRecord(
            p, r, s_dist, cosine, s_cos, s_loss, combined, state.reputation, self.status(p), reason, mix_score
        )

    def _records_near(
        self,
        call: Call,
        p: str,
        *,
        first: bool,
        r: float,
        s_loss: float | None,
        bad: bool,
        cosine: float | None,
    ) -> bool:
        """Whether this version's loss ratio joins ``p``'s near history (``record_near``): it sat near and
        scored at least ``bad_score``. Not from its first version (nearfix) unless that pulls along the own
        update (cosine at least ``near_first_cos``: a learner's, see the config), nor from an extra mixing
        step's (a mix sits near at the founding tolerance from round 1, which would bypass that rule). With
        ``loss_near_score`` (whose loss score already carries the excuse) only a loss clean against the
        crowd's reference (at most ``loss_ok`` times it) is recorded: judged with the excuse, or merely
        not bad (a near version scores 0.43 with a loss score of 0), a late joiner creeping up by 8 % a
        round kept a clean loss score up to 27x the own loss and weight until 87x (12x without the rule)."""
        cfg = self.config
        along = cosine is not None and cosine >= cfg.near_first_cos
        if bad or (first and not along) or call.extra_step or r > cfg.dist_ok:
            return False
        if s_loss is None or call.val_losses is None:
            return False  # (s_loss implies a loss in val_losses)
        if not cfg.loss_near_score or call.refs.loss_ref is None:
            return True
        return loss_score(cfg, float(call.val_losses[p]), call.refs.loss_ref) >= 1.0

    def _components(
        self, call: Call, p: str, model: NDArray[np.float64], state: PeerState
    ) -> tuple[float, float, float | None, float | None, float | None, float | None]:
        """(r, distance score, cosine, cosine score, loss score, loss ratio ``q``) of ``p``'s version
        (:mod:`~p2pfl.scoring.components`); tracks its loss jumps and loss reputation."""
        cfg = self.config
        r = distance_ratio(call.dists[p], call.refs.med)
        s_dist = ramp_down(r, cfg.dist_ok, cfg.dist_cutoff)
        cosine, s_cos = cosine_score(cfg, model - call.before, call.own_update, call.own_norm)
        s_loss: float | None = None
        q: float | None = None
        loss_ref, val_losses = call.refs.loss_ref, call.val_losses
        if loss_ref is not None and val_losses is not None and p in val_losses:
            loss = float(val_losses[p])
            track_jump(cfg, state, loss, call.own_val_loss)
            if cfg.loss_near_score:  # the neighbour's own near reference, as for an eviction (none
                founding = self._tolerance.founding  # for a version pulling against the own update)
                near = near_loss_reference(
                    cfg, state, loss_ref, call.own_val_loss, founding, against=s_cos == 0.0
                )
                loss_ref = loss_ref if near is None else near
            s_loss = loss_score(cfg, loss, loss_ref)
            q = loss / loss_ref if math.isfinite(loss) else math.inf
            state.loss_rep = (
                s_loss if state.loss_rep is None else (1.0 - cfg.ema) * state.loss_rep + cfg.ema * s_loss
            )
        return r, s_dist, cosine, s_cos, s_loss, q

    def _counts(
        self,
        call: Call,
        p: str,
        state: PeerState,
        combined: float,
        r: float,
        *,
        s_cos: float | None,
        s_loss: float | None,
        bad: bool,
        persistent: bool,
    ) -> tuple[bool, str, bool]:
        """Whether this version counts towards ``p``'s eviction: bad against the eviction references too,
        or far and against the own update, lossy or with hard evidence kept (:meth:`_far_against`), and far
        from the own mix's centre and from the neighbourhood's unweighted median alike; when it counts
        for the second reason alone, which evidence besides far and against (else ""); and whether the
        count is hard evidence (``PeerState.hard_evidence``: all but a far and against one at a loss an
        honest laggard reaches)."""
        cfg, refs = self.config, call.refs
        # a bad score counts towards eviction only if it is bad against the eviction reference too
        lenient, r_e = combined, r
        loss_evict = near_loss_reference(
            cfg, state, refs.loss_evict, call.own_val_loss, self._tolerance.founding, against=s_cos == 0.0
        )
        if bad and not persistent and (refs.med_evict, loss_evict) != (refs.med, refs.loss_ref):
            r_e = self._r_evict(call, p, r)
            s_loss_e = s_loss
            if s_loss is not None and loss_evict is not None:
                loss = float(call.val_losses[p])  # type: ignore[index]  # (s_loss implies a loss)
                s_loss_e = loss_score(cfg, loss, loss_evict)
            s_dist_e = ramp_down(r_e, cfg.dist_ok, cfg.dist_cutoff)
            lenient = self._combine(r_e, s_dist_e, s_cos, s_loss_e)
        seen_r = r_e  # issue 16, drift trust: far only if far from both centres (as for counting)
        if cfg.evict_distance and r_e >= cfg.evict_distance:
            seen_r = min(r_e, self._plain(call).get(p, math.inf))
        self._observe_drift(p, state, seen_r)
        # a ban needs distance evidence too (badrun.corroborated; persist_evict is distance evidence),
        # from the own mix's centre and from the neighbourhood's unweighted median alike
        counts = corroborated(lenient, cfg.bad_score, math.inf if persistent else r_e, cfg.evict_distance)
        against, hard = (
            ("", True) if counts or persistent else self._far_against(call, p, state, r, s_cos, loss_evict)
        )
        if (counts or against) and not persistent and cfg.evict_distance is not None:
            far = self._plain(call).get(p, math.inf) >= cfg.evict_distance and self.drift.counts(p, r_e)
            counts, against = counts and far, against if far else ""
        if (counts or against) and self._specialist_excused(call, p, r):
            counts, against = False, ""
        return counts or bool(against), against, hard

    def _specialist_excused(self, call: Call, p: str, r: float) -> bool:
        """A model that answers one class the own data lack (``call.specialists``) is no eviction evidence
        while it stays within ``specialist_distance`` of the eviction spread (p2pfl/scoring/specialist.py):
        its loss on the own data says that its data differ. A bad score still takes it out of the mix; the
        far-and-against evidence of a version that is not bad is excused alike."""
        cfg = self.config
        if cfg.specialist_share is None or p not in call.specialists:
            return False
        return self._r_evict(call, p, r) < cfg.specialist_distance

    def _far_against(  # noqa: PLR0917 - _counts' figures
        self, call: Call, p: str, state: PeerState, r: float, s_cos: float | None, loss_evict: float | None
    ) -> tuple[str, bool]:
        """Why a version not bad enough to count is evidence all the same (``evict_far_against``; "" when
        it is not), and whether that is hard evidence (a loss above ``loss_ok`` times the eviction
        reference, nearfix's bar, which no honest laggard reached): far (``r`` at least ``evict_distance``
        against the eviction spread, as a bad version's count), pulling against the own update (cosine at
        most ``cos_bad``) and with a loss on the own data above ``evict_far_against_loss`` times the
        eviction reference, or, whatever its loss, while the neighbour's *hard* evidence still holds a
        whole counted version (``evict_against_continues``: its leaky bucket of hard counts at 1 or more,
        :mod:`~p2pfl.scoring.badrun`; ``PeerState.hard_evidence``).

        Why the loss: in founding rounds a sign-flipper at ``r`` 9-14, cosine -0.6..-0.85, cost the own
        data only 2-9x the own loss against a tolerance of 1.0-1.9 (IID digits, 5 peers): combined 0.35-0.57,
        not bad, and its bad run restarted (docs/scoring.md, "nearfix"); in the same-round order, 2.5-2.8x
        the reference in the marginal seed, under the bar of 3 (``loss_ok``) nearfix had. Why bad evidence
        may grow without it: in that order the model converges while the flipper is being counted and its
        flipped update stops costing the own data anything (0.26x the own loss in round 4, 0 after; logistic
        regression, 100 peers) while it stays far (``r`` 8 -> 4) and anti-aligned (cosine -0.89): its run
        stopped at 3 of the 4 versions ``evict_after`` needs. Why the kept evidence and not the run: one
        version near and along the own update would end the run (a flipper that pauses once). Why it may
        not start one: honest neighbours on the same converged trajectory lag behind the own model as far
        and as anti-aligned (200 peers: ``r`` 4-13, cosine -0.7..-0.94, loss 0), with no bad version
        before (docs/scoring.md, "Against, after the loss is gone"). Why hard evidence only: a laggard that
        once cost a little more than the reference (rule 1) would otherwise be counted at any loss from
        then on, and banned at its fourth far version (issue 16, order17r)."""
        cfg, losses = self.config, call.val_losses
        if not cfg.evict_far_against or not cfg.evict_distance or s_cos != 0.0:
            return "", False
        if self._r_evict(call, p, r) < cfg.evict_distance:  # (at most r: the eviction spread is wider)
            return "", False
        loss = None if losses is None else losses.get(p)
        if (
            loss is not None
            and loss_evict is not None
            and not loss <= cfg.evict_far_against_loss * loss_evict
        ):
            hard = not loss <= cfg.loss_ok * loss_evict  # (a NaN loss is lossy)
            return f"loss over {cfg.evict_far_against_loss} x reference", hard
        if cfg.evict_against_continues and state.hard_evidence >= 1.0:  # (before this version's leak)
            return f"with hard evidence {state.hard_evidence:.2f} kept", False
        return "", False

    @staticmethod
    def _r_evict(call: Call, p: str, r: float) -> float:
        """``p``'s distance ratio against the eviction spread (``References.med_evict``, at least the
        scoring spread ``med``): ``r`` itself when that spread is empty."""
        med_evict = call.refs.med_evict
        return call.dists[p] / med_evict if med_evict > 0 else r

    def _absurd_counts(self, call: Call, p: str, state: PeerState) -> bool:
        """Whether ``p``'s absurd version counts towards its eviction: always, unless its distance (from the
        own mix's centre and from the plain median, the smaller) is no jump from its last settled versions
        (``DriftTrust.gradual``, ``ScoringConfig.evict_absurd_drift``): the drift that led there was judged
        version by version by the other rules (a trusted neighbour's not at all), and reaching the absurd
        bound by degrees is no new offence. The version is recorded, so a jump also ends the trust."""
        cfg = self.config
        if cfg.evict_absurd_drift or not cfg.evict_distance or state.absurd > 0:
            return True  # (one absurd offence, e.g. a jump, and every later absurd version counts too)
        model = call.models[p]
        if call.centre is None or not np.all(np.isfinite(model)):
            return True
        sane = {q: call.models[q] for q in call.sane}
        # measured as its sane versions were (it in the reference set as they were): out of it, one
        # neighbour fewer sets the spread, and on a 4-regular graph that alone read a dragged peer's
        # drift as a 3-5x jump (issue 16, the same-round order's victims)
        reference = self._settled(call, also=p)
        plain = neighbourhood_ratios(call.after, {**sane, p: model}, reference).get(p, math.inf)
        r = distance_ratio(float(np.linalg.norm(model - call.centre)), call.refs.med)
        seen = min(r, plain)
        gradual = self.drift.gradual(p, seen)
        self._observe_drift(p, state, seen)
        return not gradual

    def _plain(self, call: Call) -> dict[str, float]:
        """``badrun.neighbourhood_ratios`` of the sane models (computed once per call), the centre and the
        spread set by the established (as the scorer's spread: new identities cannot move it)."""
        if call.plain is None:
            sane = {q: call.models[q] for q in call.sane}
            call.plain = neighbourhood_ratios(call.after, sane, self._settled(call))
        return call.plain

    def _settled(self, call: Call, also: str | None = None) -> list[str]:
        """The models that set the plain median's centre and spread: the established sane neighbours (all
        sane ones while none is), copies of one model once (p2pfl/scoring/copies.py); ``also``: one more
        candidate (an absurd one, measured as if it were sane)."""
        pool = call.sane if also is None else [*call.sane, also]
        return distinct([q for q in pool if self._state(q).established] or pool, call.groups)

    def _earn(self, records: dict[str, ScoreRecord], young: Mapping[str, tuple[bool, bool]]) -> None:
        """Judge each scored young identity's pass against the bars the trusted neighbours' standing sets
        (:func:`~p2pfl.scoring.standing.pass_bars`) and update its record."""
        cfg = self.config
        bar, loss_bar = pass_bars(cfg, self._peers.values())
        for p, (near, hard_fail) in young.items():
            rec = records[p]
            passed = (
                near
                and rec.for_mix >= bar  # (the bar is set by reputations, which follow the mix's score)
                and (rec.loss_score is None or rec.loss_score >= loss_bar)
                and not hard_fail
            )
            reason = earn(cfg, self._peers[p], passed, hard_fail, rec.reason)
            records[p] = dataclasses.replace(rec, reason=reason, status=self.status(p))

    def _combine(self, r: float, s_dist: float, s_cos: float | None, s_loss: float | None) -> float:
        """The weighted mean of the components present (:func:`~p2pfl.scoring.components.combine`)."""
        return combine(self.config, r, s_dist, s_cos, s_loss)
