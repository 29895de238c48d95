"""Per-neighbour contribution scores, reputation, earned influence and eviction.

Each time a peer aggregates it calls :meth:`ContributionScorer.evaluate` with its own model before and
after local training, the neighbours' models it is about to mix, and a reference centre: the robust mix of
the own trained model and the *established* neighbours (never of whoever is most numerous) or, with
``reference = "median"``, their coordinate-wise median. First, models no honest neighbour could publish
(:func:`~p2pfl.scoring.influence.absurd`: non-finite, or ``hard_reject_factor`` times farther from the own
model than the own norm and the established spread) score 0 outright and count towards eviction with no
grace. Every other neighbour gets three component scores in ``[0, 1]``
(:mod:`~p2pfl.scoring.components`): the **distance** ``r`` from the centre over the median distance of the
anchors (:mod:`~p2pfl.scoring.references`: the own trained model and the founders, or the established
neighbours while fewer than two founders are candidates, or all neighbours while none is established), the
**cosine** of its pull with the own update, and optionally the **loss** of its model on the own validation
split against the calibrated reference (:mod:`~p2pfl.scoring.losses`). The own data is the trusted root.

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

This module keeps the per-identity book (queries, weights, transitions) and :meth:`~ContributionScorer.
evaluate`, which reads as the order of its steps; the steps themselves (:mod:`~p2pfl.scoring.steps`), the
arithmetic of the scores (:mod:`~p2pfl.scoring.components`), the choice of who sets the yardsticks
(:mod:`~p2pfl.scoring.references`) and the hooks into the per-neighbour histories of issue 16
(:mod:`~p2pfl.scoring.trackers`) live beside it: the split follows those responsibilities, and the code
moved unchanged but for the arguments the steps pass each other.

Everything is deterministic: no clock, no randomness, results in sorted peer order. The caller counts its
own rounds with :meth:`ContributionScorer.begin_round` (identities first heard, or first in contact
(:meth:`~ContributionScorer.contact`), within ``founding_rounds`` of them are founders).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from p2pfl.scoring.badrun import DriftTrust
from p2pfl.scoring.components import as_vec, unit_hint
from p2pfl.scoring.config import ScoringConfig
from p2pfl.scoring.echo import Echo
from p2pfl.scoring.heading import Heading
from p2pfl.scoring.influence import absurd, ramp_cap
from p2pfl.scoring.losses import LossTolerance
from p2pfl.scoring.persistence import PersistentDistance
from p2pfl.scoring.standing import STATUSES, PeerState, ScoreRecord, Status, reject_absurd, standing
from p2pfl.scoring.steps import ScoringSteps

__all__ = ["STATUSES", "ContributionScorer", "ScoreRecord", "Status"]


class ContributionScorer(ScoringSteps):
    """Scores neighbours, keeps their reputation and standing, decides exclusion and eviction.

    Pure state machine: the only inputs are the arguments of its methods. Peers never seen are ``active``
    with ``initial_reputation``, established if first heard, or first in contact, within ``founding_rounds``
    own rounds (or when probation is off), else ``young``.
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
            hint = 1.0 if self.weight_hint is None else unit_hint(self.weight_hint(p))
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
        if record.for_mix >= cfg.drop_below:
            return False
        return record.distance_score < 1.0 or record.loss_score < 1.0

    def absurd(self, own_after: ArrayLike, neighbours: Mapping[str, ArrayLike]) -> dict[str, float]:
        """The neighbours whose models are absurd (see :func:`~p2pfl.scoring.influence.absurd`), with their
        distance from ``own_after``. The caller drops them before any averaging, the reference included."""
        after = as_vec(own_after, "own_after")
        models = {p: as_vec(neighbours[p], f"neighbours[{p!r}]", after.shape[0]) for p in neighbours}
        est = {p for p in models if self._state(p).established and self._state(p).status != "evicted"}
        return absurd(after, models, est, self.config.hard_reject_factor)

    # -- transitions -----------------------------------------------------------------------------

    def begin_round(self) -> None:
        """The caller starts an own round (identities first heard or in contact within ``founding_rounds``
        are founders)."""
        self.rounds += 1

    def contact(self, peer: str) -> bool:
        """The caller is in authenticated contact with ``peer`` (connected and subscribed to our versions:
        the transport proved its key). Noted before the scorer begins its round ``founding_rounds`` (the
        peer notes its contacts as each round starts, so those of its rounds 1 to ``founding_rounds``
        count, as versions first scored in them do), an identity with no record gets one now: a founder,
        whether or not it has published. A peer slow from its first round, whose first version arrives
        after the founding rounds, is then not taken for a late joiner (docs/scoring.md, "Founders by
        contact"). Returns whether a record was made; later, or for a known identity, nothing changes (a
        new one is young when first heard, as before)."""
        cfg = self.config
        if peer in self._peers or self.rounds >= cfg.founding_rounds or cfg.young_rounds == 0:
            return False  # (with probation off every identity is established when first heard anyway)
        self._peers[peer] = self._state(peer)
        return True

    def readmit(self, peer: str) -> None:
        """Put an evicted peer on probation with ``probation_reputation``; no-op for other peers. Once off
        probation it is young again: an identity earns its weight back."""
        state = self._peers.get(peer)
        if state is None or state.status != "evicted":
            return
        state.status = "probation"
        state.reputation = self.config.probation_reputation
        state.forgive_evidence()
        state.probation_left = self.config.probation_length
        state.established = state.founder = self.config.young_rounds == 0
        state.passes = 0
        state.near_ratios.clear()
        state.absurd = 0  # paid for by the eviction (a repeat offender's next one lasts twice as long)
        self._reset_history(peer)

    def restore_eviction(self, peer: str) -> None:
        """``peer`` was evicted before a restart (its ban still runs): evicted again, with nothing else
        known; the ban's expiry readmits it on probation as any eviction's."""
        state = self._peers.setdefault(peer, self._state(peer))
        state.status = "evicted"
        state.reputation = 0.0
        state.forgive_evidence()

    def grant_grace(self, peer: str) -> None:
        """``peer`` comes back after a silence (or joins late): its next ``return_grace`` scores do not count
        towards eviction (see :class:`ScoringConfig`); absurd models always count. No-op for an evicted peer
        or one on probation."""
        state = self._peers.setdefault(peer, self._state(peer))
        if state.status in ("evicted", "probation"):
            return
        state.grace_left = self.config.return_grace
        state.forgive_run(1.0)  # (the silence itself leaks nothing: each grace version does)
        self._reset_history(peer)

    def forget(self, peer: str) -> None:
        """Drop everything known about ``peer`` (e.g. it left the network for good)."""
        self._peers.pop(peer, None)
        self._reset_history(peer)

    def known(self) -> list[str]:
        """The peers with a record (p2pfl.protocol.churn forgets the quiet ones)."""
        return list(self._peers)

    def history_size(self) -> int:
        """Entries of the per-peer histories (persistence, echo, heading): bounded with the records."""
        return sum(len(h) for h in (self.persistence, self.echo, self.heading) if h is not None)

    def state_of(self, peer: str) -> PeerState | None:
        """``peer``'s record, or None if it has none (read-only use: p2pfl.protocol.churn)."""
        return self._peers.get(peer)

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
        extra_step: bool = False,
        specialists: Collection[str] = (),
    ) -> dict[str, ScoreRecord]:
        """Score every neighbour once, update reputations, standings and statuses, return the records.

        Evicted neighbours are not scored (their record repeats the eviction); pass ``readmit`` first to
        give them another chance. ``val_losses`` is used when ``config.use_val_loss`` and
        ``own_val_loss`` is a positive finite number; a neighbour missing from it just has no loss score.
        With ``only``, the other neighbours still set the honest spread (the median distance) but get no
        score: a model already scored is no new evidence, however often the caller mixes it.

        ``extra_step``: the call mixes an extra mixing step's versions (p2pfl.protocol.mixing), mostly the
        neighbours' *mixes*. Each is scored, weighed and counted as any version; with
        ``histories_from_mixes = False`` the histories that judge trained versions (echo, persistence)
        are neither fed nor reset by it (their factors still apply): the echo's geometry (an honest
        trained model lies behind the own trained model along the own step) does not hold for a mix, and
        a clique's mixes agree so closely that an honest bridge's mix sits at ``r`` 3-6 among them
        (issue 16, dumbbell seed 2: 145 of 186 bridge mixes held by the echo, docs/scoring.md). A
        poisoned extra version is still scored, dropped and counted like a trained one.

        ``specialists``: the neighbours whose model answers one class the own validation split lacks
        (p2pfl.scoring.specialist, found by the caller, who holds the data); with ``specialist_share`` set
        their bad scores count towards eviction only from ``specialist_distance`` on.
        """
        call = self._prepare(
            own_before,
            own_after_local_training,
            neighbours,
            centre,
            val_losses,
            own_val_loss,
            extra_step=extra_step,
            specialists=specialists,
        )
        records: dict[str, ScoreRecord] = {}
        young: dict[str, tuple[bool, bool]] = {}  # scored young identities: (passed, hard failure)
        for p, model in call.models.items():
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
            if p in call.rejected:
                counts = self._absurd_counts(call, p, state)
                reason = reject_absurd(self.config, state, call.rejected[p], counts=counts)
                records[p] = ScoreRecord(
                    p, math.inf, 0.0, None, None, None, 0.0, state.reputation, self.status(p), reason
                )
                continue
            records[p] = self._score(call, p, model, state, young)
        sane = {p: call.models[p] for p in call.sane}
        self._observe_heading(call.after, sane, [p for p in records if p in call.dists])
        self._earn(records, young)
        return records
