"""Heading: where a neighbour's offset from the centre keeps pointing, round after round.

Attacks that hide inside the honest spread (ALIE, IPM) are close to the centre in distance, loss and cosine
with the own update, so no single version gives them away (docs/scoring.md: every one-version signal
measured had an AUC between 0.2 and 0.8 against them). What they cannot change without giving up their
effect is the *direction* of their offset ``x_i - centre``, and they keep it every round:

* **lag** (IPM, Xie et al. 2020): ``cos(x_i - centre, progress)``, with ``progress`` a moving average of
  the centre's motion from one evaluation to the next. IPM publishes its mix moved back against its
  neighbours' update, so it sits behind the consensus on the way it is going; an honest neighbour's
  offset is what its data add, about orthogonal to that motion.
* **shift** (ALIE, Baruch et al. 2019): ``cos(x_i - centre, sigma)``, with ``sigma`` the per-coordinate
  standard deviation of the neighbours' models this round. ALIE publishes ``mean - z * sigma``
  coordinate-wise, a shift in every coordinate by its spread in one sign; an honest offset has no reason
  to follow the spread's sign pattern.

The centre of both is the unweighted coordinate-wise median of the own trained model and the sane
neighbours' models, not the scorer's weighted reference: that one moves away from whoever this signal
holds out, which then looks as if it lagged behind the motion (a feedback loop that cut honest neighbours'
weight in a first version).

Each is smoothed per neighbour (``value <- memory * value + (1 - memory) * new``) so one version decides
nothing, and each turns into a mixing-weight factor that is 1 down to ``*_ok`` and 0 at ``*_bad`` (both
signals are "too negative" tests); the neighbour's factor is the smaller one. It only weighs, never evicts.

**The lag test's gate** (``lag_share``): under dissensus the attackers drag an observer's own centre away
from its honest neighbours, which then all lag behind its motion; a lag test that held them cut the peer
off the honest network (the 6-regular dissensus cell fell to 80.7 / 44.9 % with 7 false evictions). An
IPM attacker is one of a minority that lags; honest neighbours dragged apart lag together at the dragged
observer (recorded per pair: the collapsed peers held 3 and 4 of their 4 honest neighbours). So the lag test
weighs only while at most ``lag_share`` (a third) of the sane neighbours lag (smoothed lag below
``lag_ok``); beyond that it stands down for every neighbour of this observer. This is the observer's own
reading of its own neighbourhood, not a vote among observers. The centre also leaves out neighbours
that echo or persistence already hold (a dissensus model aimed at this peer does not drag its centre).
While the own model is clearly ahead of that motion (its own smoothed lag at least ``lag_firm_own``) up
to ``lag_firm_share`` (a half) may lag: three IPM colluders among six neighbours are behind the own model,
not a sign that the centre is off course (an observer dragged by dissensus lags itself).

**Hysteresis** (``lag_release``): a neighbour whose smoothed lag reached ``lag_bad`` while the test weighed
stays at weight 0 until its smoothed lag rises to ``lag_release``; an IPM attacker whose lag hovers around
``lag_bad`` (recorded at observers with two IPM neighbours) no longer gets part of its weight back every
other round. An attacker that knows it pushes while it has weight and eases off until released: it keeps a
duty cycle, less than the attacker that sits just inside ``lag_ok`` gets under either rule.

Measured offline on recorded scorer inputs (digits Dirichlet 0.3 on random 6- and
4-regular graphs, and mnist5k on the 6-regular one, 25 % attackers; AUC of attackers vs honest
neighbours, rounds 11-40, docs/scoring.md "Fourth pass"): shift 1.00 / 0.96 / 1.00 against ALIE, lag 1.00 /
0.94 / 0.97 against IPM; closed loop, docs/scoring.md "Fifth pass".

Failure modes: an attacker that knows the rule randomises the sign pattern of its ALIE shift, or keeps its IPM
offset's cosine with the progress it can estimate at or above ``lag_ok`` (``simulations/poisoning.py``:
``alie_signs = "random"``, ``ipm_evade_lag``, ``ipm_lag_floor``); the signal then does not see it, and what is
left of the attack is measured in docs/scoring.md. An observer with more than half of its neighbours IPM
attackers (or more than a third while its own model barely keeps up, or lagging for any reason) gets no lag
test at all (the gate). In a model so small that cosines of
noise are large (tens of parameters) around a centre that does not move, honest neighbours lag at random (two
synthetic 12-dimensional scorer tests run with ``heading_lag = false``). Honest peers dragged by an attacker
majority, or lagging after a stall (a neighbour whose versions arrive a round or more stale lags like IPM with
epsilon 0), can lose weight (weight only: no eviction). A neighbour whose model differs from the others' by
about the same amount, one sign, in every coordinate (a uniform drift, as in synthetic tests) looks exactly
like ALIE's shift and is held out too. Within the founding rounds the centre moves too fast for a heading to
mean anything, and the caller does not apply it.

Pure: no clock, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from p2pfl.errors import ConfigError
from p2pfl.scoring.numbers import is_real, median_rows

__all__ = ["Heading", "HeadingConfig"]


@dataclass(frozen=True)
class HeadingConfig:
    """Thresholds of :class:`Heading`; ``ConfigError("scoring", field, reason)`` when invalid."""

    #: weight 1 while the smoothed lag cosine is at or above this, 0 at or below ``lag_bad``
    lag_ok: float = -0.3
    lag_bad: float = -0.4
    #: the same for the smoothed shift cosine
    shift_ok: float = -0.55
    shift_bad: float = -0.75
    #: the smoothing: weight of the old value per observation
    memory: float = 0.7
    #: whether the lag test weighs at all
    lag: bool = True
    #: the lag test holds neighbours only while at most this share of the sane neighbours lags (smoothed
    #: lag below ``lag_ok``); beyond it the observer's own centre is off the consensus's course (dragged by
    #: dissensus) and the test stands down for everyone (without this gate the 6-regular dissensus cell
    #: fell to 80.7 / 44.9 % with 7 false evictions; docs/scoring.md)
    lag_share: float = 1.0 / 3.0
    #: ... and only while the own trained model keeps up with the centre's motion: its own smoothed lag at
    #: least this (an observer whose centre dissensus drags away from it lags behind that motion itself)
    lag_own_ok: float = 0.0
    #: ... and while the own trained model is clearly ahead of the centre's motion (own smoothed lag at least
    #: ``lag_firm_own``) up to ``lag_firm_share`` may lag: an observer with three IPM attackers among six
    #: neighbours (a half) keeps its lag test, where dissensus drags the own model behind (own lag median
    #: -0.08 / -0.01 under dissensus, 0.27 / 0.26 at observers of IPM; docs/scoring.md, "Sixth pass")
    lag_firm_share: float = 0.5
    lag_firm_own: float = 0.1
    #: hysteresis of the lag test: a neighbour whose smoothed lag reached ``lag_bad`` while the test weighed
    #: stays at weight 0 (while it weighs) until its smoothed lag rises to this; ``lag_bad`` turns it off (the
    #: plain ramp). An IPM attacker at an observer with two of them hovers around ``lag_bad`` and the ramp
    #: gave it back part of its weight in 8-13 of 30 rounds (docs/scoring.md, "Sixth pass")
    lag_release: float = -0.2

    def __post_init__(self) -> None:
        for name, ok, bad in (
            ("heading_lag_ok/heading_lag_bad", self.lag_ok, self.lag_bad),
            ("heading_shift_ok/heading_shift_bad", self.shift_ok, self.shift_bad),
        ):
            if not (is_real(ok) and is_real(bad) and -1.0 <= bad < ok <= 1.0):
                raise ConfigError("scoring", name, f"need -1 <= bad < ok <= 1, got {ok!r}, {bad!r}")
        if not isinstance(self.lag, bool):
            raise ConfigError("scoring", "heading_lag", f"must be a bool, got {self.lag!r}")
        if not (is_real(self.lag_own_ok) and -1.0 <= self.lag_own_ok <= 1.0):
            raise ConfigError(
                "scoring", "heading_lag_own_ok", f"must be a number in [-1, 1], got {self.lag_own_ok!r}"
            )
        if not (is_real(self.lag_share) and 0.0 <= self.lag_share <= 1.0):
            raise ConfigError(
                "scoring", "heading_lag_share", f"must be a number in [0, 1], got {self.lag_share!r}"
            )
        # ranges only, each checked after the setting it is compared with: a config written before these
        # three existed (say heading_lag_bad = -0.1 > the default release) still loads, and the effective
        # values below lift each to its partner (release_at, firm_own_at, firm_share_at)
        for name, value, low in (
            ("heading_lag_release", self.lag_release, -1.0),
            ("heading_lag_firm_own", self.lag_firm_own, -1.0),
            ("heading_lag_firm_share", self.lag_firm_share, 0.0),
        ):
            if not (is_real(value) and low <= value <= 1.0):
                raise ConfigError("scoring", name, f"must be a number in [{low:g}, 1], got {value!r}")
        if not (is_real(self.memory) and 0.0 <= self.memory < 1.0):
            raise ConfigError("scoring", "heading_memory", f"must be a number in [0, 1), got {self.memory!r}")

    @property
    def release_at(self) -> float:
        """The hysteresis' release level in effect: ``lag_release``, at least ``lag_bad`` (the plain ramp)."""
        return max(self.lag_release, self.lag_bad)

    @property
    def firm_own_at(self) -> float:
        """The own lag from which the firm gate applies: ``lag_firm_own``, at least ``lag_own_ok``."""
        return max(self.lag_firm_own, self.lag_own_ok)

    @property
    def firm_share_at(self) -> float:
        """The share that may lag under the firm gate: ``lag_firm_share``, at least ``lag_share``."""
        return max(self.lag_firm_share, self.lag_share)


def _cos(a: NDArray[np.float64], b: NDArray[np.float64]) -> float | None:
    """Cosine of two vectors (scalar arithmetic: np.linalg.norm and np.clip cost more than the dots here);
    ``None`` when either is zero or not finite."""
    na = math.sqrt(float(a @ a))
    nb = math.sqrt(float(b @ b))
    if na == 0.0 or nb == 0.0 or not (math.isfinite(na) and math.isfinite(nb)):
        return None
    value = float(a @ b) / (na * nb)
    return min(1.0, max(-1.0, value)) if math.isfinite(value) else None


def _std_rows(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    """``np.std(rows, axis=0)`` (population) with one ``einsum`` instead of np.std's generic path."""
    dev = rows - rows.mean(axis=0)
    out: NDArray[np.float64] = np.sqrt(np.einsum("ij,ij->j", dev, dev) / rows.shape[0])
    return out


def _ramp(value: float, ok: float, bad: float) -> float:
    """1 at ``value >= ok``, 0 at ``value <= bad``, linear between."""
    if value >= ok:
        return 1.0
    if value <= bad:
        return 0.0
    return (value - bad) / (ok - bad)


class Heading:
    """Per neighbour, the smoothed lag and shift cosines and the weight factor they earn (module doc)."""

    def __init__(self, config: HeadingConfig | None = None) -> None:
        self.config = config if config is not None else HeadingConfig()
        self._centre: NDArray[np.float64] | None = None
        self._progress: NDArray[np.float64] | None = None
        self._lag: dict[str, float] = {}
        self._shift: dict[str, float] = {}
        self._lag_open = True
        #: the own trained model's smoothed lag (None: not observed since the founding rounds)
        self._own_lag: float | None = None
        #: neighbours the lag test holds at 0 until their smoothed lag rises to ``lag_release``
        self._held: set[str] = set()

    def observe(
        self,
        own: NDArray[np.float64],
        models: Mapping[str, NDArray[np.float64]],
        scored: Mapping[str, bool],
        reference: Collection[str] | None = None,
    ) -> None:
        """One evaluation: the own trained model ``own`` and the sane neighbours' ``models``; ``scored`` names
        the neighbours whose heading to update, ``True`` when the signal applies to them now (``False``:
        forget what they showed, as for a neighbour within the founding rounds; one scored without a sane
        model keeps what it showed). The own model and the
        ``reference`` neighbours (default: all; none present: all) set the round's centre and spread, so a
        crowd of new identities cannot shape them and make an established neighbour look shifted."""
        with np.errstate(all="ignore"):  # a non-finite model gives no cosine (None), never a warning
            self._observe(own, models, scored, reference)

    def _observe(
        self,
        own: NDArray[np.float64],
        models: Mapping[str, NDArray[np.float64]],
        scored: Mapping[str, bool],
        reference: Collection[str] | None,
    ) -> None:
        # The centre is the coordinate-wise median of the own model and the reference neighbours, unweighted:
        # a centre drawn with the scorer's weights moves away from whoever this signal holds out, which
        # then looks as if it lagged behind that motion (a feedback loop measured on honest neighbours).
        rows = [models[q] for q in reference if q in models] if reference is not None else []
        rows = rows or list(models.values())
        if not rows or not (self.config.lag or any(scored.values())):
            for p, applies in scored.items():  # nothing to observe (no sane model, or the founding rounds)
                if not applies:
                    self.reset(p)
            return
        stack = np.stack([own, *rows])
        centre = median_rows(stack)
        lag = self.config.lag
        if lag and self._centre is not None and self._centre.shape == centre.shape:
            step = centre - self._centre
            if np.all(np.isfinite(step)):
                m = self.config.memory
                self._progress = step if self._progress is None else m * self._progress + (1.0 - m) * step
        self._centre = centre
        sigma = _std_rows(stack[1:]) if len(rows) >= 2 else None
        for p, applies in scored.items():
            model = models.get(p)
            if not applies:
                self.reset(p)
                continue
            if model is None:
                # a version that is not sane (scored 0 elsewhere) says nothing of the heading: what the
                # earlier ones showed, and a hold, stay (reset, a held IPM attacker got its weight back
                # for the price of one absurd version)
                continue
            offset = model - centre
            if lag and self._progress is not None:
                self._smooth(self._lag, p, _cos(offset, self._progress))
            if sigma is not None:
                self._smooth(self._shift, p, _cos(offset, sigma))
        if lag:
            self._gate(own - centre, models, any(scored.values()))

    def _gate(self, own_offset: NDArray[np.float64], models: Mapping[str, object], scoring: bool) -> None:
        """The lag test's gate: a minority may lag (up to ``lag_share``, or ``lag_firm_share`` while the own
        model is clearly ahead); a larger share, or the own model lagging, means the centre is off course."""
        cfg = self.config
        if scoring and self._progress is not None:
            mine = _cos(own_offset, self._progress)
            if mine is not None:
                old = self._own_lag
                self._own_lag = mine if old is None else cfg.memory * old + (1.0 - cfg.memory) * mine
        seen = [self._lag[p] for p in models if p in self._lag]
        behind = sum(1 for v in seen if v < cfg.lag_ok)
        own_lag = self._own_lag
        if own_lag is None or own_lag < cfg.lag_own_ok:
            self._lag_open = False
        else:
            share = cfg.firm_share_at if own_lag >= cfg.firm_own_at else cfg.lag_share
            self._lag_open = behind <= share * len(seen)
        self._latch()

    def _latch(self) -> None:
        """The hysteresis: release the held neighbours whose smoothed lag rose to ``lag_release``; while the
        test weighs, hold those at or below ``lag_bad`` (the ramp's 0)."""
        cfg = self.config
        self._held = {p for p in self._held if (v := self._lag.get(p)) is not None and v < cfg.release_at}
        if self._lag_open:
            self._held.update(p for p, v in self._lag.items() if v <= cfg.lag_bad)

    def _smooth(self, table: dict[str, float], peer: str, value: float | None) -> None:
        if value is None:
            return
        old = table.get(peer)
        m = self.config.memory
        table[peer] = value if old is None else m * old + (1.0 - m) * value

    def lag(self, peer: str) -> float | None:
        """The smoothed lag cosine (``None``: not observed, or the lag test is off)."""
        return self._lag.get(peer)

    @property
    def lag_open(self) -> bool:
        """Whether the lag test weighs now: the own trained model keeps up with the centre's motion (smoothed
        lag at least ``lag_own_ok``) and at most ``lag_share`` of the sane neighbours lag."""
        return self.config.lag and self._lag_open

    def shift(self, peer: str) -> float | None:
        return self._shift.get(peer)

    def weight(self, peer: str) -> float:
        """Weight factor in ``[0, 1]``: the smaller of the shift's and (with ``lag``, while the gate is
        open) the lag's ramps."""
        cfg = self.config
        w = 1.0
        lag = self._lag.get(peer) if cfg.lag and self._lag_open else None
        if lag is not None:
            w = 0.0 if peer in self._held else min(w, _ramp(lag, cfg.lag_ok, cfg.lag_bad))
        shift = self._shift.get(peer)
        if shift is not None:
            w = min(w, _ramp(shift, cfg.shift_ok, cfg.shift_bad))
        return w

    def reset(self, peer: str) -> None:
        self._held.discard(peer)
        self._lag.pop(peer, None)
        self._shift.pop(peer, None)

    def __len__(self) -> int:
        """Peers with a heading (bounded with the scorer's records: p2pfl.protocol.churn)."""
        return len(self._lag.keys() | self._shift.keys())
