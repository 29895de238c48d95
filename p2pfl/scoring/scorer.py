"""Per-neighbour contribution scores, reputation, earned influence and eviction.

Each time a peer aggregates it calls :meth:`ContributionScorer.evaluate` with its own model before and
after local training, the neighbours' models it is about to mix, and a reference centre: the robust mix of
the own trained model and the *established* neighbours (never of whoever is most numerous) or, with
``reference = "median"``, their coordinate-wise median. First, models no honest neighbour could publish
(:func:`~p2pfl.scoring.influence.absurd`: non-finite, or ``hard_reject_factor`` times farther from the own
model than the own norm and the established spread) score 0 outright and count towards eviction with no
grace. Every other neighbour gets three component scores in ``[0, 1]``:

* **distance** — ``r = |x_i - centre| / median distance`` (the median over the own trained model and the
  founders, or the established neighbours while fewer than two founders are candidates, or all neighbours
  while none is established). Honest non-IID neighbours
  sit around ``r ~ 1``; ``r <= dist_ok`` scores 1, falling linearly to 0 at ``r = dist_cutoff``. Beyond
  ``r = dist_hard`` (off by default) the combined score is 0 outright.
* **cosine** — ``cos(x_i - own_before, own_after - own_before)``: does the neighbour pull the peer the
  way its own data does? ``cos >= cos_ok`` scores 1, falling linearly to 0 at ``cos_bad``. Skipped
  (``None``) when either vector is zero.
* **loss** (optional) — the neighbour's model's loss on the peer's own validation split, relative to
  ``L_ref = max(L_own, loss_floor) * t``, where the tolerance ``t`` is the same anchors' median
  loss (of two, the smaller) over ``max(L_own, loss_floor)``, clamped to ``[1, loss_tolerance_max]`` (the
  last calibration is kept while no established neighbour is a candidate). ``q = L_i / L_ref``;
  ``q <= loss_ok`` scores 1, falling to 0 at ``loss_bad``. The own data is the trusted root; the tolerance
  exists because on non-IID data every honest neighbour is much worse than the peer itself on its own split.
  A non-finite loss scores 0.

The combined score is the weighted mean of the components present (defaults: distance 1, cosine 0.5,
loss 2). An established neighbour's mixing weight falls from 1 to 0 as the smallest ``r`` of its last
``persist_window`` versions goes from ``persist_soft`` to ``persist_hard``, and with ``persist_evict`` its
version then scores 0 (:mod:`~p2pfl.scoring.persistence`, docs/scoring.md). After the founding rounds it also
falls from 1 to 0 as the echo of its version (the cosine of its offset from the own trained model with the
own update) goes from ``echo_ok`` to ``echo_bad``: dissensus aimed at this peer (:mod:`~p2pfl.scoring.echo`),
unless its loss on the own validation data is below ``echo_ahead`` times the own trained model's.
``cap_by_hard_evidence`` instead caps the mean by the distance and loss scores (off by default,
docs/aggregation.md). Reputation is an exponential moving average, ``rep <- (1 - ema) * rep + ema *
combined``, so one noisy round does not decide anything.

Statuses: ``active`` (aggregated), ``young`` (active but not established: mixed with at most its
:func:`~p2pfl.scoring.influence.ramp_cap` of the passes it holds, the young together at most
``young_share_cap`` of a mix; a version passes against the lower of ``young_pass_score`` and the founders'
own standing, see :func:`~p2pfl.scoring.standing.pass_bars`),
``excluded`` (reputation below ``exclude_below``: scored but not aggregated until it recovers), ``evicted``
(``evict_after`` consecutive evaluations below ``bad_score``, a leaky bucket of them reaching ``evict_after``
(:mod:`~p2pfl.scoring.badrun`: a good score does not reset it), each at ``r >= evict_distance`` from the
own mix and from the neighbours' plain median (``badrun.corroborated``), or ``evict_after`` absurd models
in all: no longer scored or aggregated; the protocol disconnects it) and ``probation`` (after
:meth:`ContributionScorer.readmit`: scored but not aggregated; ``probation_length`` evaluations in a
row without eviction evidence make it young again: it earns its influence again; one that counts evicts it).

Everything is deterministic: no clock, no randomness, results in sorted peer order. The caller counts its
own rounds with :meth:`ContributionScorer.begin_round` (identities first heard within ``founding_rounds``
of them are founders).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Iterable, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from p2pfl.errors import AggregationError
from p2pfl.scoring.badrun import DriftTrust, corroborated, leak, neighbourhood_ratios
from p2pfl.scoring.config import ScoringConfig
from p2pfl.scoring.echo import Echo, echo, loss_ratio
from p2pfl.scoring.heading import Heading
from p2pfl.scoring.influence import absurd, ramp_cap
from p2pfl.scoring.losses import LossTolerance, track_jump
from p2pfl.scoring.persistence import PersistentDistance, persistence_reason, persistently_far
from p2pfl.scoring.standing import (
    STATUSES,
    PeerState,
    ScoreRecord,
    Status,
    earn,
    pass_bars,
    reject_absurd,
    standing,
    transition,
)

__all__ = ["STATUSES", "ContributionScorer", "ScoreRecord", "Status"]


def _ramp_down(value: float, ok: float, bad: float) -> float:
    """1 at ``value <= ok``, 0 at ``value >= bad``, linear between (``ok < bad``)."""
    if value <= ok:
        return 1.0
    if value >= bad:
        return 0.0
    return (bad - value) / (bad - ok)


def _as_vec(x: object, name: str, d: int | None = None) -> NDArray[np.float64]:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or (d is not None and arr.shape[0] != d):
        want = f"({d},)" if d is not None else "1-D"
        raise AggregationError(f"{name} must have shape {want}, got {arr.shape}")
    return arr


class ContributionScorer:
    """Scores neighbours, keeps their reputation and standing, decides exclusion and eviction.

    Pure state machine: the only inputs are the arguments of its methods. Peers never seen are ``active``
    with ``initial_reputation``, established if first heard within ``founding_rounds`` own rounds (or when
    probation is off), else ``young``.
    """

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config if config is not None else ScoringConfig()
        self._peers: dict[str, PeerState] = {}
        #: own rounds begun (see begin_round)
        self.rounds = 0
        #: the loss tolerance calibrated on the anchors (:mod:`~p2pfl.scoring.losses`)
        self._tolerance = LossTolerance(self.config)
        #: issue 16: each neighbour's distance over its last versions (None: persistent_distance off)
        self.persistence = (
            PersistentDistance(self.config.persistence()) if self.config.persistent_distance else None
        )
        #: issue 16, evidence from other observers (p2pfl/scoring/evidence.py): peer -> a factor in [0, 1]
        #: on its weight; bounded by the caller, never touches scores, reputation or eviction
        self.weight_hint: Callable[[str], float] | None = None
        #: issue 16: each neighbour's last echo of the own update (None: echo off; p2pfl/scoring/echo.py)
        self.echo = Echo(self.config.echo_config()) if self.config.echo else None
        #: issue 16: each neighbour's smoothed heading from the centre (None: off; p2pfl/scoring/heading.py)
        self.heading = Heading(self.config.heading_config()) if self.config.heading else None
        #: issue 16: the neighbours whose gradual drift is data, not poisoning (p2pfl/scoring/badrun.py)
        cfg = self.config
        self.drift = DriftTrust(cfg.evict_trust_versions, cfg.evict_jump, cfg.evict_trusted_distance)

    # -- queries ---------------------------------------------------------------------------------

    @property
    def loss_tolerance(self) -> float:
        """The loss tolerance last calibrated on established neighbours (kept while none is a candidate)."""
        return self._tolerance.tolerance

    @property
    def founding_tolerance(self) -> float:
        """The largest tolerance calibrated within the founding rounds: the ceiling after them."""
        return self._tolerance.founding

    def _state(self, peer: str) -> PeerState:
        state = self._peers.get(peer)
        if state is None:
            cfg = self.config
            state = PeerState(cfg.initial_reputation)
            state.status = standing(cfg, state.reputation)
            state.established = cfg.young_rounds == 0 or self.rounds <= cfg.founding_rounds
            state.founder = state.established
        return state

    def status(self, peer: str) -> Status:
        """Current status of ``peer``: ``young`` for an active identity that has not earned full weight yet
        (unknown peers are ``active`` or ``young``, or ``excluded`` if the initial reputation is low)."""
        state = self._state(peer)
        if state.status == "active" and not state.established:
            return "young"
        return state.status

    def is_evicted(self, peer: str) -> bool:
        """``status(peer) == "evicted"`` without building a default state for an unknown peer (who is never
        evicted): the protocol asks this for every envelope and every view."""
        state = self._peers.get(peer)
        return state is not None and state.status == "evicted"

    def is_admitted(self, peer: str) -> bool:
        """Whether ``peer``'s model may be aggregated now (active or young peers are, young ones with at most
        their :meth:`influence_cap`)."""
        return self._state(peer).status == "active"

    def is_established(self, peer: str) -> bool:
        """Whether ``peer`` is a founder or earned full weight (established peers anchor the reference)."""
        return self._state(peer).established

    def is_founder(self, peer: str) -> bool:
        """Whether ``peer`` was established when first heard (founding rounds, or probation off)."""
        return self._state(peer).founder

    def influence_cap(self, peer: str) -> float:
        """The largest weight ``peer`` may have in a mix now: 1 when established, else its ramp."""
        state = self._state(peer)
        if state.established:
            return 1.0
        return ramp_cap(state.passes, self.config.young_rounds, self.config.ramp_rounds)

    def reputation(self, peer: str) -> float:
        """The exponential moving average of ``peer``'s combined scores."""
        return self._state(peer).reputation

    def evicted(self) -> set[str]:
        """Peers currently evicted."""
        return {p for p, s in self._peers.items() if s.status == "evicted"}

    def weights_for(self, peers: Iterable[str]) -> NDArray[np.float64]:
        """Aggregation weights, one per peer in order: 0 for peers not admitted, else 1 (``binary``) or the
        reputation (``reputation``), times the peer's :meth:`influence_cap` (0 for a young peer still on
        probation). The young peers' total share is capped by the caller (:func:`~p2pfl.scoring.influence.
        cap_share`), which knows the own model's weight. Zero-weight rows are dropped by ``aggregate``."""
        out = []
        for p in peers:
            state = self._state(p)
            if state.status != "active":
                out.append(0.0)
                continue
            base = 1.0 if self.config.weighting == "binary" else state.reputation
            hint = 1.0 if self.weight_hint is None else _unit_hint(self.weight_hint(p))
            out.append(
                base
                * self.influence_cap(p)
                * self._persistence_weight(p)
                * self._echo_weight(p)
                * self._heading_weight(p)
                * hint
            )
        return np.asarray(out, dtype=np.float64)

    def doubted(self, record: ScoreRecord) -> bool:
        """Whether a version scored ``record`` leaves the mix although it scored at least ``bad_score`` (see
        :class:`ScoringConfig`): after the founding rounds, with a loss on the own validation data, when its
        loss ratio jumped (``loss_jump``), or its combined score is below ``drop_below`` *and* its hard
        evidence is not clean (loss above ``loss_ok`` times the reference, or distance ratio above
        ``dist_ok``). Without the loss, or within the founding rounds, only ``bad_score`` drops a version:
        distance and cosine alone are moved by honest noise (engine tests: converged neighbours at r 2-3 with
        random cosines score ~0.67; a behaving founder at r 4-6 in round 1)."""
        cfg = self.config
        if self.rounds <= cfg.founding_rounds or record.loss_score is None:
            return False
        if self._state(record.peer).jumped:
            return True
        if record.combined >= cfg.drop_below:
            return False
        return record.distance_score < 1.0 or record.loss_score < 1.0

    def absurd(self, own_after: ArrayLike, neighbours: Mapping[str, ArrayLike]) -> dict[str, float]:
        """The neighbours whose models are absurd (see :func:`~p2pfl.scoring.influence.absurd`), with their
        distance from ``own_after``. The caller drops them before any averaging, the reference included."""
        after = _as_vec(own_after, "own_after")
        models = {p: _as_vec(neighbours[p], f"neighbours[{p!r}]", after.shape[0]) for p in neighbours}
        est = {p for p in models if self._state(p).established and self._state(p).status != "evicted"}
        return absurd(after, models, est, self.config.hard_reject_factor)

    # -- transitions -----------------------------------------------------------------------------

    def begin_round(self) -> None:
        """The caller starts an own round (identities first heard within ``founding_rounds`` are founders)."""
        self.rounds += 1

    def readmit(self, peer: str) -> None:
        """Put an evicted peer on probation with ``probation_reputation``; no-op for other peers. Once off
        probation it is young again: an identity earns its weight back."""
        state = self._peers.get(peer)
        if state is None or state.status != "evicted":
            return
        state.status = "probation"
        state.reputation = self.config.probation_reputation
        state.consecutive_bad = 0
        state.bad_evidence = 0.0
        state.probation_left = self.config.probation_length
        state.established = state.founder = self.config.young_rounds == 0
        state.passes = 0
        state.absurd = 0  # paid for by the eviction (a repeat offender's next one lasts twice as long)
        self._reset_history(peer)

    def grant_grace(self, peer: str) -> None:
        """``peer`` comes back after a silence (or joins late): its next ``return_grace`` scores do not count
        towards eviction (see :class:`ScoringConfig`); absurd models always count. No-op for an evicted peer
        or one on probation."""
        state = self._peers.setdefault(peer, self._state(peer))
        if state.status in ("evicted", "probation"):
            return
        state.grace_left = self.config.return_grace
        state.consecutive_bad = 0
        state.bad_evidence = 0.0
        self._reset_history(peer)

    def forget(self, peer: str) -> None:
        """Drop everything known about ``peer`` (e.g. it left the network for good)."""
        self._peers.pop(peer, None)
        self._reset_history(peer)

    def evaluate(  # noqa: PLR0917 - positional order is the protocol layer's documented call
        self,
        own_before: ArrayLike,
        own_after_local_training: ArrayLike,
        neighbours: Mapping[str, ArrayLike],
        centre: ArrayLike,
        val_losses: Mapping[str, float] | None = None,
        own_val_loss: float | None = None,
        *,
        only: Collection[str] | None = None,
    ) -> dict[str, ScoreRecord]:
        """Score every neighbour once, update reputations, standings and statuses, return the records.

        Evicted neighbours are not scored (their record repeats the eviction); pass ``readmit`` first to
        give them another chance. ``val_losses`` is used when ``config.use_val_loss`` and
        ``own_val_loss`` is a positive finite number; a neighbour missing from it just has no loss score.
        With ``only``, the other neighbours still set the honest spread (the median distance) but get no
        score: a model already scored is no new evidence, however often the caller mixes it.
        """
        cfg = self.config
        before = _as_vec(own_before, "own_before")
        d = before.shape[0]
        after = _as_vec(own_after_local_training, "own_after_local_training", d)
        ctr = _as_vec(centre, "centre", d)
        models = {p: _as_vec(neighbours[p], f"neighbours[{p!r}]", d) for p in sorted(neighbours)}
        own_update = after - before
        own_norm = float(np.linalg.norm(own_update))

        scored = [p for p in models if self._state(p).status != "evicted"]
        rejected = self.absurd(after, {p: models[p] for p in scored})
        sane = [p for p in scored if p not in rejected]
        dists = {p: float(np.linalg.norm(models[p] - ctr)) for p in sane}
        # The spread is the founders' (and the own model's) while at least two founders are candidates, else
        # the established neighbours': a crowd of new identities can neither widen it nor narrow it, nor can
        # identities that earned their standing while founders are around (one founder alone would set it
        # by its own distance). While none is established (a peer whose every neighbour is new) every sane
        # neighbour sets it, as before earned influence.
        # (neighbours the own checks already distrust, reputation below ``exclude_below``, calibrate nothing)
        trusted = [p for p in sane if self._state(p).status == "active"]
        founders = [p for p in trusted if self._state(p).founder]
        anchors = (
            founders if len(founders) >= 2 else [p for p in trusted if self._state(p).established] or sane
        )
        med = float(np.median([*(dists[p] for p in anchors), float(np.linalg.norm(after - ctr))]))
        loss_ref = self._tolerance.reference(self.rounds, anchors, val_losses, own_val_loss)
        # Of exactly two founders the peer cannot tell which one is honest (every sane one counts here,
        # trusted or not: one kept out of the mix still speaks for its data). The references above take the
        # closer one, so a sign-flipper beside an honest founder scores 0 and stays out of the mix; a bad
        # score counts towards eviction (a ban) only if it is bad against the farther one too.
        pair = [p for p in sane if self._state(p).founder]
        med_evict, loss_evict = med, loss_ref
        if len(pair) == 2:
            med_evict = max(med, *(dists[p] for p in pair))
            loss_evict = self._tolerance.eviction_reference(pair, val_losses, loss_ref)

        # a young identity is near enough when no farther from the centre than a trusted founder is (with
        # few founders of similar data the spread is narrow, and honest newcomers with other data sat at
        # r 2-5 in the default scenario when only two peers were founders)
        reach = max((dists[p] for p in founders), default=0.0)
        records: dict[str, ScoreRecord] = {}
        plain: dict[str, float] | None = None  # badrun.neighbourhood_ratios, computed when first needed
        young: dict[str, tuple[bool, bool]] = {}  # scored young identities: (passed, hard failure)
        for p, model in models.items():
            if only is not None and p not in only:
                continue
            state = self._peers.setdefault(p, self._state(p))
            if state.status == "evicted":
                records[p] = ScoreRecord(
                    p,
                    math.nan,
                    0.0,
                    None,
                    None,
                    None,
                    0.0,
                    state.reputation,
                    "evicted",
                    "evicted: not scored",
                )
                continue
            if p in rejected:
                reason = reject_absurd(cfg, state, rejected[p])
                records[p] = ScoreRecord(
                    p, math.inf, 0.0, None, None, None, 0.0, state.reputation, self.status(p), reason
                )
                continue
            r = dists[p] / med if med > 0 else (0.0 if dists[p] == 0 else math.inf)
            s_dist = _ramp_down(r, cfg.dist_ok, cfg.dist_cutoff)
            pull = model - before
            pull_norm = float(np.linalg.norm(pull))
            cosine: float | None = None
            s_cos: float | None = None
            if own_norm > 0 and pull_norm > 0:
                cosine = float(np.clip(np.dot(pull, own_update) / (pull_norm * own_norm), -1.0, 1.0))
                s_cos = 1.0 - _ramp_down(cosine, cfg.cos_bad, cfg.cos_ok)
            s_loss: float | None = None
            if loss_ref is not None and val_losses is not None and p in val_losses:
                loss = float(val_losses[p])
                track_jump(cfg, state, loss, own_val_loss)
                s_loss = (
                    _ramp_down(loss / loss_ref, cfg.loss_ok, cfg.loss_bad) if math.isfinite(loss) else 0.0
                )
                state.loss_rep = (
                    s_loss if state.loss_rep is None else (1.0 - cfg.ema) * state.loss_rep + cfg.ema * s_loss
                )
            combined = self._combine(r, s_dist, s_cos, s_loss)
            far = self._persistently_far(p, state, r, len(anchors) + 1)  # issue 16
            self._observe_echo(  # issue 16
                p, model, after, own_update, val_losses=val_losses, own_val_loss=own_val_loss
            )
            persistent = far and cfg.persist_evict
            if persistent:
                combined = 0.0
            state.reputation = (1.0 - cfg.ema) * state.reputation + cfg.ema * combined
            bad = combined < cfg.bad_score
            # a bad score counts towards eviction only if it is bad against the eviction reference too
            lenient, r_e = combined, r
            if bad and not persistent and (med_evict, loss_evict) != (med, loss_ref):
                r_e = dists[p] / med_evict if med_evict > 0 else r
                s_loss_e = s_loss
                if s_loss is not None and loss_evict is not None:
                    loss = float(val_losses[p])  # type: ignore[index]  # (s_loss implies a loss)
                    q = loss / loss_evict if math.isfinite(loss) else math.inf
                    s_loss_e = _ramp_down(q, cfg.loss_ok, cfg.loss_bad)
                s_dist_e = _ramp_down(r_e, cfg.dist_ok, cfg.dist_cutoff)
                lenient = self._combine(r_e, s_dist_e, s_cos, s_loss_e)
            seen_r = r_e  # issue 16, drift trust: far only if far from both centres (as for counting)
            if cfg.evict_distance and r_e >= cfg.evict_distance:
                plain = plain if plain is not None else self._plain(after, models, sane)
                seen_r = min(r_e, plain.get(p, math.inf))
            self._observe_drift(p, state, seen_r)
            # a ban needs distance evidence too (badrun.corroborated; persist_evict is distance evidence),
            # from the own mix's centre and from the neighbourhood's unweighted median alike
            counts = corroborated(lenient, cfg.bad_score, math.inf if persistent else r_e, cfg.evict_distance)
            if counts and not persistent and cfg.evict_distance is not None:
                plain = plain if plain is not None else self._plain(after, models, sane)
                counts = plain.get(p, math.inf) >= cfg.evict_distance and self.drift.counts(p, r_e)
            if state.grace_left > 0:
                state.grace_left -= 1
                state.consecutive_bad = 0
                state.bad_evidence = 0.0
            else:
                state.consecutive_bad = state.consecutive_bad + 1 if counts else 0
                state.bad_evidence = leak(state.bad_evidence, counts, cfg.bad_memory)
            reason = transition(cfg, state, bad, combined, counts=counts)
            if persistent:
                reason = f"{reason}; {persistence_reason(cfg.persistence())}"
            if not state.established:
                # (scored against the bars below, once every trusted neighbour's standing is updated)
                young[p] = (r <= cfg.dist_ok or dists[p] <= reach, bad or state.jumped or s_loss == 0.0)
            records[p] = ScoreRecord(
                p, r, s_dist, cosine, s_cos, s_loss, combined, state.reputation, self.status(p), reason
            )
        self._observe_heading(after, {p: models[p] for p in sane}, [p for p in records if p in dists])
        bar, loss_bar = pass_bars(cfg, self._peers.values())
        for p, (near, hard_fail) in young.items():
            rec = records[p]
            passed = (
                near
                and rec.combined >= bar
                and (rec.loss_score is None or rec.loss_score >= loss_bar)
                and not hard_fail
            )
            reason = earn(cfg, self._peers[p], passed, hard_fail, rec.reason)
            records[p] = dataclasses.replace(rec, reason=reason, status=self.status(p))
        return records

    # -- issue 16: persistent distance (p2pfl/scoring/persistence.py) --------------------------------

    def _persistently_far(self, peer: str, state: PeerState, r: float, spread: int) -> bool:
        """Track ``peer``'s ``r`` while it is settled (:func:`~p2pfl.scoring.persistence.persistently_far`):
        established, after the founding rounds, outside grace and probation, with at least
        ``persist_min_spread`` distances (``spread``: the anchors' and the own) setting the median."""
        cfg = self.config
        settled = not (
            state.grace_left > 0
            or spread < cfg.persist_min_spread
            or self.rounds <= cfg.founding_rounds
            or not state.established
            or state.status == "probation"
        )
        return persistently_far(self.persistence, peer, r, settled=settled)

    def _persistence_weight(self, peer: str) -> float:
        return 1.0 if self.persistence is None else self.persistence.weight(peer)

    # -- issue 16: echo of the own update (p2pfl/scoring/echo.py) -----------------------------------------

    def _observe_echo(
        self,
        peer: str,
        model: NDArray[np.float64],
        after: NDArray[np.float64],
        update: NDArray[np.float64],
        *,
        val_losses: Mapping[str, float] | None,
        own_val_loss: float | None,
    ) -> None:
        """Record the echo of ``peer``'s version after the founding rounds (within them every model
        starts from nearly the same place: no evidence), with its loss on the own data over the own."""
        if self.echo is not None:
            settled = self.rounds > self.config.founding_rounds
            ratio = None
            if self.config.use_val_loss and val_losses is not None and peer in val_losses:
                ratio = loss_ratio(float(val_losses[peer]), own_val_loss)
            self.echo.observe(peer, echo(model, after, update) if settled else None, ratio)

    def _echo_weight(self, peer: str) -> float:
        return 1.0 if self.echo is None else self.echo.weight(peer)

    # -- issue 16: heading of the offset from the centre (p2pfl/scoring/heading.py) -----------------------

    def _observe_heading(
        self, own: NDArray[np.float64], sane: Mapping[str, NDArray[np.float64]], scored: list[str]
    ) -> None:
        """Smooth the heading of each version just scored, after the founding rounds (within them the centre
        moves too fast for a heading to mean anything); the established sane models set the centre and the
        spread, as they set the scorer's: new identities cannot frame an established neighbour."""
        if self.heading is not None:
            settled = self.rounds > self.config.founding_rounds
            reference = [p for p in sane if self._state(p).established]
            self.heading.observe(own, sane, dict.fromkeys(scored, settled), reference)

    def _heading_weight(self, peer: str) -> float:
        return 1.0 if self.heading is None else self.heading.weight(peer)

    def _plain(
        self, after: NDArray[np.float64], models: Mapping[str, NDArray[np.float64]], sane: list[str]
    ) -> dict[str, float]:
        """``badrun.neighbourhood_ratios`` of the sane models, the centre and spread set by the established
        (as the scorer's spread: new identities cannot move it)."""
        settled = [q for q in sane if self._state(q).established] or sane
        return neighbourhood_ratios(after, {q: models[q] for q in sane}, settled)

    def _observe_drift(self, peer: str, state: PeerState, r: float) -> None:
        """Record ``r`` towards ``peer``'s drift trust (settled versions only: established, after the founding
        rounds, outside grace and probation; p2pfl/scoring/badrun.py, ``DriftTrust``)."""
        cfg = self.config
        if cfg.evict_distance:
            settled = (
                state.established
                and state.grace_left == 0
                and state.status != "probation"
                and self.rounds > cfg.founding_rounds
            )
            self.drift.observe(peer, r, cfg.evict_distance, settled=settled)

    def _reset_history(self, peer: str) -> None:
        """Forget what ``peer``'s earlier versions showed (grace, readmission, departure)."""
        self.drift.reset(peer)
        if self.persistence is not None:
            self.persistence.reset(peer)
        if self.echo is not None:
            self.echo.reset(peer)
        if self.heading is not None:
            self.heading.reset(peer)

    def _combine(self, r: float, s_dist: float, s_cos: float | None, s_loss: float | None) -> float:
        """The weighted mean of the components present (see the module doc)."""
        cfg = self.config
        parts = [(cfg.w_distance, s_dist), (cfg.w_cosine, s_cos), (cfg.w_loss, s_loss)]
        total_w = sum(w for w, s in parts if s is not None)
        combined = sum(w * s for w, s in parts if s is not None) / total_w if total_w > 0 else s_dist
        # Distance and own-data loss are hard evidence and cap the score; the cosine is soft
        # evidence (honest non-IID neighbours often pull against the own update) and only averages.
        if cfg.cap_by_hard_evidence:
            hard = [s for w, s in (parts[0], parts[2]) if w > 0 and s is not None]
            combined = min([combined, *hard])
        if cfg.dist_hard is not None and r >= cfg.dist_hard:
            combined = 0.0  # far outside any honest spread: no other component may average it away
        return combined


def _unit_hint(value: float) -> float:
    """A weight hint clamped to [0, 1]; a non-finite hint counts as none, so it cannot poison a mix."""
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 1.0
