"""Per-neighbour contribution scores, reputation and eviction.

Each time a peer aggregates it calls :meth:`ContributionScorer.evaluate` with its own model before and
after local training, the neighbours' models it is about to mix, and a reference centre: the mix itself
(robust under the default geomed rule) or, with ``reference = "median"``, the coordinate-wise median of the
own trained model and the neighbours' (a plain-mean mix lets the models under test drag it towards them).
Every neighbour gets three component scores in ``[0, 1]``:

* **distance** — ``r = |x_i - centre| / median distance`` (the median is taken over the neighbours *and*
  the peer's own trained model, so one trusted distance is always in it). Honest non-IID neighbours sit
  around ``r ~ 1``; ``r <= dist_ok`` scores 1, falling linearly to 0 at ``r = dist_cutoff``. Catches scaled,
  Gaussian and far-away models. Beyond ``r = dist_hard`` (off by default) the combined score is 0 outright.
* **cosine** — ``cos(x_i - own_before, own_after - own_before)``: does the neighbour pull the peer the
  way its own data does? ``cos >= cos_ok`` scores 1, falling linearly to 0 at ``cos_bad``. Catches
  sign-flip and inner-product-manipulation models that hide close to the centre. Skipped (``None``) when
  either vector is zero.
* **loss** (optional) — the neighbour's model's loss on the peer's own validation split, relative to
  ``L_ref = max(L_own, median of the neighbours' losses)`` (of two neighbours, the smaller loss):
  ``q = L_i / L_ref``; ``q <= loss_ok`` scores 1, falling to 0 at ``loss_bad``. The peer's own data is the
  trusted root: no other peer can fake it. The median (not ``L_own`` alone) is the reference because on
  non-IID data every honest neighbour is much worse than the peer itself on the peer's own split; a
  poisoned model is worse than the honest majority.
  A non-finite loss scores 0.

The combined score is the weighted mean of the components present (defaults: distance 1, cosine 0.5,
loss 2: the own-data loss is the strongest evidence, the cosine the weakest, because honest non-IID
neighbours regularly pull against the peer's own update). ``cap_by_hard_evidence`` instead caps the mean by
the distance and loss scores; measured with the real peer on Dirichlet(0.5) digits, capping evicted honest
peers whenever one component was noisy, so it is off by default (docs/aggregation.md).
Reputation is an exponential moving average, ``rep <- (1 - ema) * rep + ema * combined``, so one noisy
round does not decide anything.

Statuses: ``active`` (aggregated), ``excluded`` (reputation below ``exclude_below``: scored but not
aggregated until it recovers), ``evicted`` (``evict_after`` consecutive evaluations with a combined score
below ``bad_score``: no longer scored or aggregated; the protocol disconnects it) and ``probation``
(after :meth:`ContributionScorer.readmit`: scored but not aggregated; ``probation_length`` consecutive
good evaluations make it active again, a single bad one evicts it again).

Everything is deterministic: no clock, no randomness, results in sorted peer order.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from p2pfl.errors import AggregationError, ConfigError

__all__ = ["STATUSES", "ContributionScorer", "ScoreRecord", "ScoringConfig", "Status"]

Status = Literal["active", "excluded", "evicted", "probation"]
STATUSES: Final[tuple[Status, ...]] = ("active", "excluded", "evicted", "probation")


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
    #: the loss reference never goes below this (in the learner's loss unit; the default suits cross-entropy
    #: in nats). Without it, the longer honest peers trained the smaller the reference got, and an honest
    #: skewed neighbour's loss of ~1 nat against a reference of ~0.1 read as poisoned. Measured without
    #: attackers at a constant learning rate: 6-7 false evictions in 300 rounds, 10 in 600; with 0.25, 0 and
    #: 2; with 0.5, 0 and 1, but the default scenario's sign-flippers were then evicted by 8 of 12 honest
    #: observers (mean round 22) instead of 12 of 12 (round 8; 0.25 keeps that). 0 turns it off.
    loss_floor: float = 0.25
    w_distance: float = 1.0
    w_cosine: float = 0.5
    w_loss: float = 2.0
    use_val_loss: bool = True
    weighting: Literal["binary", "reputation"] = "binary"
    cap_by_hard_evidence: bool = False
    #: leave a neighbour scored below ``bad_score`` out of the very mix it was scored against (the peer
    #: aggregates again without it), instead of only lowering its reputation for later rounds
    drop_bad_at_once: bool = True
    #: what distances are measured from: ``aggregate`` (the mix itself; robust under the default geomed rule)
    #: or ``median`` (coordinate-wise, over the own trained model and every candidate), which attackers cannot
    #: drag along when the rule is a plain mean (simulations/scenarios/attacks16.toml uses it)
    reference: Literal["median", "aggregate"] = "aggregate"
    #: A neighbour heard again after ``return_gap_rounds`` own rounds of silence (restarted, reconnected, or
    #: first heard only then: it joined late) gets ``return_grace`` versions whose bad scores do not count
    #: towards eviction: the neighbourhood converged without its data, so its first trained versions are far
    #: off however honest it is (measured: a peer restarted after ~30 of its neighbours' rounds scored r 10-20
    #: for 6 versions, then r 1.0). A bad version still leaves the mix at once and lowers the reputation, so
    #: the grace lets no poison in; it only delays an eviction. Peers heard from the first rounds get none.
    return_grace: int = 8
    return_gap_rounds: int = 5

    def __post_init__(self) -> None:
        unit = ("ema", "initial_reputation", "exclude_below", "bad_score", "probation_reputation")
        for name in unit:
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise ConfigError("scoring", name, f"must be a number in [0, 1], got {value!r}")
        if self.ema == 0.0:
            raise ConfigError("scoring", "ema", "must be > 0, or reputations never move")
        for name in ("evict_after", "probation_length", "return_gap_rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError("scoring", name, f"must be an integer >= 1, got {value!r}")
        grace = self.return_grace
        if isinstance(grace, bool) or not isinstance(grace, int) or grace < 0:
            raise ConfigError("scoring", "return_grace", f"must be an integer >= 0, got {grace!r}")
        if not _is_real(self.dist_cutoff) or not 1.0 < self.dist_cutoff < math.inf:
            raise ConfigError(
                "scoring", "dist_cutoff", f"must be a finite number > 1, got {self.dist_cutoff!r}"
            )
        hard = self.dist_hard
        if hard is not None and (not _is_real(hard) or hard <= self.dist_cutoff):
            raise ConfigError("scoring", "dist_hard", f"must be None or a number > dist_cutoff, got {hard!r}")
        if not _is_real(self.dist_ok) or not 0.0 < self.dist_ok < self.dist_cutoff:
            raise ConfigError("scoring", "dist_ok", f"must be in (0, dist_cutoff), got {self.dist_ok!r}")
        if not (
            _is_real(self.cos_ok) and _is_real(self.cos_bad) and -1.0 <= self.cos_bad < self.cos_ok <= 1.0
        ):
            raise ConfigError(
                "scoring",
                "cos_bad/cos_ok",
                f"need -1 <= cos_bad < cos_ok <= 1, got {self.cos_bad!r}, {self.cos_ok!r}",
            )
        if not (
            _is_real(self.loss_ok) and _is_real(self.loss_bad) and 0 < self.loss_ok < self.loss_bad < math.inf
        ):
            raise ConfigError(
                "scoring",
                "loss_ok/loss_bad",
                f"need 0 < loss_ok < loss_bad < inf, got {self.loss_ok!r}, {self.loss_bad!r}",
            )
        for name in ("w_distance", "w_cosine", "w_loss", "loss_floor"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value < math.inf:
                raise ConfigError("scoring", name, f"must be a finite number >= 0, got {value!r}")
        if self.w_distance + self.w_cosine + self.w_loss == 0:
            raise ConfigError(
                "scoring", "w_distance/w_cosine/w_loss", "at least one component weight must be > 0"
            )
        for name in ("use_val_loss", "cap_by_hard_evidence", "drop_bad_at_once"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError("scoring", name, f"must be a bool, got {getattr(self, name)!r}")
        if self.reference not in ("median", "aggregate"):
            raise ConfigError(
                "scoring", "reference", f"must be 'median' or 'aggregate', got {self.reference!r}"
            )
        if self.weighting not in ("binary", "reputation"):
            raise ConfigError(
                "scoring", "weighting", f"must be 'binary' or 'reputation', got {self.weighting!r}"
            )


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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


@dataclass
class _PeerState:
    reputation: float
    status: Status = "active"
    consecutive_bad: int = 0
    probation_left: int = 0
    grace_left: int = 0


def _robust_median(values: list[float]) -> float:
    """The median, except of two values: their mean would let either one set half of it; take the smaller."""
    return min(values) if len(values) == 2 else float(np.median(values))


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
    """Scores neighbours, keeps their reputation and decides exclusion and eviction.

    Pure state machine: the only inputs are the arguments of :meth:`evaluate` and :meth:`readmit`.
    Peers never seen are ``active`` with ``initial_reputation``.
    """

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config if config is not None else ScoringConfig()
        self._peers: dict[str, _PeerState] = {}

    # -- queries ---------------------------------------------------------------------------------

    def _state(self, peer: str) -> _PeerState:
        state = self._peers.get(peer)
        if state is None:
            state = _PeerState(self.config.initial_reputation)
            state.status = self._standing(state.reputation)
        return state

    def _standing(self, reputation: float) -> Status:
        return "active" if reputation >= self.config.exclude_below else "excluded"

    def status(self, peer: str) -> Status:
        """Current status of ``peer`` (unknown peers are ``active``, or ``excluded`` if the initial
        reputation is below the threshold)."""
        return self._state(peer).status

    def is_admitted(self, peer: str) -> bool:
        """Whether ``peer``'s model may be aggregated now (only ``active`` peers are)."""
        return self._state(peer).status == "active"

    def reputation(self, peer: str) -> float:
        """The exponential moving average of ``peer``'s combined scores."""
        return self._state(peer).reputation

    def evicted(self) -> set[str]:
        """Peers currently evicted."""
        return {p for p, s in self._peers.items() if s.status == "evicted"}

    def weights_for(self, peers: Iterable[str]) -> NDArray[np.float64]:
        """Aggregation weights, one per peer in order: 0 for peers not admitted, else 1 (``binary``)
        or the reputation (``reputation``). Pass them to :func:`p2pfl.aggregation.aggregate`, which drops
        zero-weight rows; binary weights keep the unweighted (exact, fast) aggregation path."""
        out = []
        for p in peers:
            state = self._state(p)
            if state.status != "active":
                out.append(0.0)
            elif self.config.weighting == "binary":
                out.append(1.0)
            else:
                out.append(state.reputation)
        return np.asarray(out, dtype=np.float64)

    # -- transitions -----------------------------------------------------------------------------

    def readmit(self, peer: str) -> None:
        """Put an evicted peer on probation with ``probation_reputation``; no-op for other peers."""
        state = self._peers.get(peer)
        if state is None or state.status != "evicted":
            return
        state.status = "probation"
        state.reputation = self.config.probation_reputation
        state.consecutive_bad = 0
        state.probation_left = self.config.probation_length

    def grant_grace(self, peer: str) -> None:
        """``peer`` comes back after a silence (or joins late): its next ``return_grace`` scores do not count
        towards eviction (see :class:`ScoringConfig`). No-op for an evicted peer or one on probation."""
        state = self._peers.setdefault(peer, self._state(peer))
        if state.status in ("evicted", "probation"):
            return
        state.grace_left = self.config.return_grace
        state.consecutive_bad = 0

    def forget(self, peer: str) -> None:
        """Drop everything known about ``peer`` (e.g. it left the network for good)."""
        self._peers.pop(peer, None)

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
        """Score every neighbour once, update reputations and statuses, return the records by peer.

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
        dists = {p: float(np.linalg.norm(models[p] - ctr)) for p in scored}
        med = float(np.median([*dists.values(), float(np.linalg.norm(after - ctr))]))
        use_loss = (
            cfg.use_val_loss
            and val_losses is not None
            and own_val_loss is not None
            and math.isfinite(own_val_loss)
            and own_val_loss > 0
        )
        loss_ref = 0.0
        if use_loss and val_losses is not None and own_val_loss is not None:
            # Relative to the neighbours' median, not to the own loss alone: on non-IID data every honest
            # neighbour's model is worse on our validation split than our own (measured: 3-20x in early
            # rounds on Dirichlet(0.5) digits), while a poisoned model is worse than the honest majority.
            finite = [
                float(val_losses[p]) for p in scored if p in val_losses and math.isfinite(val_losses[p])
            ]
            # With two neighbours the smaller loss: their mean let a sign-flipper beside one honest neighbour
            # score 1. (The lower median for every even count cost a false eviction in 3 of 3 attacks16 IPM
            # runs: with 6 neighbours the plain median already outvotes a minority.)
            loss_ref = max(own_val_loss, _robust_median(finite) if finite else own_val_loss, cfg.loss_floor)

        records: dict[str, ScoreRecord] = {}
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
            if use_loss and val_losses is not None and p in val_losses:
                loss = float(val_losses[p])
                s_loss = (
                    _ramp_down(loss / loss_ref, cfg.loss_ok, cfg.loss_bad) if math.isfinite(loss) else 0.0
                )
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
            state.reputation = (1.0 - cfg.ema) * state.reputation + cfg.ema * combined
            bad = combined < cfg.bad_score
            if state.grace_left > 0:
                state.grace_left -= 1
                state.consecutive_bad = 0
            else:
                state.consecutive_bad = state.consecutive_bad + 1 if bad else 0
            reason = self._transition(state, bad, combined)
            records[p] = ScoreRecord(
                p, r, s_dist, cosine, s_cos, s_loss, combined, state.reputation, state.status, reason
            )
        return records

    def _transition(self, state: _PeerState, bad: bool, combined: float) -> str:
        cfg = self.config
        if state.status == "probation":
            if bad:
                state.status = "evicted"
                return f"evicted: bad evaluation on probation (score {combined:.3f} < {cfg.bad_score})"
            state.probation_left -= 1
            if state.probation_left > 0:
                return f"probation: {state.probation_left} good evaluations to go"
            state.status = self._standing(state.reputation)
            return f"probation passed; {state.status}"
        if state.consecutive_bad >= cfg.evict_after:
            state.status = "evicted"
            return f"evicted: {state.consecutive_bad} consecutive scores below {cfg.bad_score}"
        state.status = self._standing(state.reputation)
        if state.status == "excluded":
            return f"excluded: reputation {state.reputation:.3f} < {cfg.exclude_below}"
        if bad and state.consecutive_bad == 0:
            return f"active: bad score {combined:.3f} (returning: {state.grace_left} versions of grace left)"
        if bad:
            return f"active: bad score {combined:.3f} ({state.consecutive_bad}/{cfg.evict_after} to eviction)"
        return "active"
