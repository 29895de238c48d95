"""Observations that cross a bridge as hints, never as votes (issue 16).

A label-flip model stays inside the honest spread: only a peer whose own validation data hold the flipped
classes sees its loss, and a peer on the far side of a bridge, whose data hold other classes, never does.
Here a peer turns what it measured into an :class:`Observation` (which contributor, which version and
model digest, which classes of its own validation data the model does much worse on than the honest
spread), and a peer that receives observations keeps them in an :class:`EvidenceBook` that turns them into a
bounded *mixing-weight factor* for the subject:

``factor = 1 - max_penalty * max over observers of trust(observer) * severity``

* **A hint, not a vote.** The strongest single observation counts, weighted by the receiver's own trust in
  its observer; a second, third or hundredth accuser adds nothing. A coalition of Sybils is worth exactly
  its most trusted member.
* **Bounded.** The factor never goes below ``1 - max_penalty``, whatever is claimed; the book never
  touches scores, reputation, exclusion or eviction. Evidence alone bans nobody.
* **Checkable where the receiver can check.** When the receiver measured the same subject on a class the
  observation accuses and saw no loss there, the observation is refuted and ignored.
* **Fresh.** An observation lives ``ttl_rounds`` of the receiver's rounds; a newer one of the same observer
  about the same subject replaces it; each observer has at most ``max_subjects`` entries.

Pure logic: no clock, no I/O, rounds and trust are passed in. :func:`class_losses` and :func:`assess` are
the observer's side (per-class loss on its own validation data, against the per-class median over its
own model and the models it scores).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from p2pfl.errors import AggregationError, ConfigError

__all__ = [
    "ClassLosses",
    "EvidenceBook",
    "EvidenceConfig",
    "Observation",
    "Streaks",
    "assess",
    "class_losses",
    "severity",
]

#: class -> (mean cross-entropy, samples) on the observer's own validation data
ClassLosses = dict[int, tuple[float, int]]
#: the largest number of accused classes an observation carries (the worst ones)
MAX_CLASSES = 8


@dataclass(frozen=True)
class EvidenceConfig:
    """Thresholds of both sides. ``ratio_ok`` / ``ratio_bad``: a class's loss over the honest median at or
    below ``ratio_ok`` is no evidence, at ``ratio_bad`` or above full evidence (linear between);
    ``min_samples``: classes with fewer validation samples say nothing; ``loss_floor``: the median is floored
    at it (a well-learnt class has a median loss near 0, where every ratio would explode)."""

    enabled: bool = False
    ratio_ok: float = 2.0
    ratio_bad: float = 4.0
    min_samples: int = 3
    loss_floor: float = 0.1
    max_penalty: float = 0.5
    ttl_rounds: int = 5
    max_subjects: int = 64
    #: the trust in an observer heard only through a relay (its own trust is capped at this and the relay's)
    relayed_trust: float = 0.5
    #: the observer publishes on a subject only after this many consecutive assessed versions above
    #: ``ratio_ok`` (:class:`Streaks`): a non-IID honest model is confidently wrong on a class now and then,
    #: a label-flipper on every version
    persist_versions: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio_ok < self.ratio_bad:
            raise ConfigError("evidence", "ratio_ok", "need 0 < ratio_ok < ratio_bad")
        if not 0.0 <= self.max_penalty <= 1.0:
            raise ConfigError("evidence", "max_penalty", "must be in [0, 1]")
        if not 0.0 <= self.relayed_trust <= 1.0:
            raise ConfigError("evidence", "relayed_trust", "must be in [0, 1]")
        if not math.isfinite(self.ratio_bad):
            raise ConfigError("evidence", "ratio_bad", "must be finite")
        for name in ("ttl_rounds", "max_subjects", "min_samples", "persist_versions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError("evidence", name, f"must be an integer >= 1, got {value!r}")
        if not (self.loss_floor > 0 and math.isfinite(self.loss_floor)):
            raise ConfigError("evidence", "loss_floor", "must be a positive finite number")


@dataclass(frozen=True)
class Observation:
    """What ``observer`` measured on ``subject``'s version ``seq`` (model digest ``digest``) in its own round
    ``round``: for each accused class, the loss ratio against the honest median (each ``> ratio_ok``)."""

    observer: str
    subject: str
    seq: int
    digest: bytes
    round: int
    classes: tuple[tuple[int, float], ...]


def class_losses(proba: npt.ArrayLike, labels: npt.ArrayLike) -> ClassLosses:
    """Per-class mean cross-entropy of predicted probabilities ``proba`` (n x C) for ``labels`` (n). A
    non-finite or zero probability gives an infinite loss for its class (a broken model is full evidence).
    Mismatched shapes (a caller bug) raise ``AggregationError``."""
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or y.ndim != 1 or p.shape[0] != y.shape[0]:
        raise AggregationError(f"proba must be n x C and labels n, got {p.shape} and {y.shape}")
    out: ClassLosses = {}
    if y.size == 0:
        return out
    picked = p[np.arange(y.size), np.clip(y, 0, p.shape[1] - 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        nll = -np.log(picked)
    nll[~np.isfinite(nll)] = math.inf
    for c in np.unique(y):
        mask = y == c
        out[int(c)] = (float(nll[mask].mean()), int(mask.sum()))
    return out


def severity(classes: tuple[tuple[int, float], ...], cfg: EvidenceConfig) -> float:
    """How strongly an observation accuses: the worst class's ratio mapped linearly from ``ratio_ok`` (0)
    to ``ratio_bad`` (1)."""
    worst = max((r for _, r in classes), default=0.0)
    if math.isnan(worst) or worst <= cfg.ratio_ok:
        return 0.0
    return min(1.0, (worst - cfg.ratio_ok) / (cfg.ratio_bad - cfg.ratio_ok))


def ratios(
    own: ClassLosses, models: Mapping[str, ClassLosses], cfg: EvidenceConfig
) -> dict[str, dict[int, float]]:
    """Each model's loss ratio per class with at least ``min_samples`` samples, against the median over
    the own model and every model given (floored at ``loss_floor``)."""
    out: dict[str, dict[int, float]] = {p: {} for p in models}
    for c, (own_loss, n) in own.items():
        if n < cfg.min_samples:
            continue
        column = [own_loss, *(m[c][0] for m in models.values() if c in m)]
        finite = [v for v in column if math.isfinite(v)]
        ref = max(float(np.median(finite)) if finite else math.inf, cfg.loss_floor)
        for p, m in models.items():
            if c in m:
                out[p][c] = m[c][0] / ref if math.isfinite(ref) else 1.0
    return out


def assess(
    observer: str,
    round_: int,
    own: ClassLosses,
    models: Mapping[str, tuple[int, bytes, ClassLosses]],
    cfg: EvidenceConfig,
) -> list[Observation]:
    """The observer's side: one observation per model (``subject -> (seq, digest, its class losses)``) that
    does worse than ``ratio_ok`` times the honest median on some class of the own validation data."""
    table = ratios(own, {p: v[2] for p, v in models.items()}, cfg)
    out = []
    for subject in sorted(models):
        bad = sorted(((c, r) for c, r in table[subject].items() if r > cfg.ratio_ok), key=lambda t: -t[1])
        if bad:
            seq, digest, _ = models[subject]
            classes = tuple((c, r if math.isfinite(r) else 1e9) for c, r in bad[:MAX_CLASSES])
            out.append(Observation(observer, subject, seq, digest, round_, classes))
    return out


@dataclass
class Streaks:
    """The observer's side: how many consecutive versions of each subject it found above ``ratio_ok``."""

    config: EvidenceConfig
    _runs: dict[str, tuple[int, int]] = field(default_factory=dict)  # subject -> (last seq, run length)

    def filter(self, assessed: Mapping[str, int], found: list[Observation]) -> list[Observation]:
        """``assessed``: every subject assessed now with its version's seq; ``found``: what :func:`assess`
        returned. The observations whose subject has been above ``ratio_ok`` for ``persist_versions``
        consecutive versions (a version assessed twice counts once)."""
        hit = {o.subject for o in found}
        for subject, seq in assessed.items():
            last, run = self._runs.get(subject, (-1, 0))
            if subject not in hit:
                self._runs[subject] = (seq, 0)
            elif seq != last:
                self._runs[subject] = (seq, run + 1)
        return [o for o in found if self._runs[o.subject][1] >= self.config.persist_versions]

    def forget(self, subject: str) -> None:
        self._runs.pop(subject, None)


@dataclass
class _Entry:
    obs: Observation
    received: int  # the receiver's round
    relay: str | None  # the neighbour it came through (None: from the observer itself)


@dataclass
class EvidenceBook:
    """The receiver's side: the observations it holds, and the mixing-weight factor they give a subject."""

    me: str
    config: EvidenceConfig = field(default_factory=EvidenceConfig)
    _by_observer: dict[str, dict[str, _Entry]] = field(default_factory=dict)

    def record(self, obs: Observation, now_round: int, relay: str | None = None) -> str:
        """Keep ``obs`` (already authenticated: its signature checked by the caller) if it is news; returns
        ``"kept"`` or why not (``self``: about its own observer; ``about_me``: the receiver cannot down-weight
        itself; ``older``: it has a newer one of that observer on that subject; ``no_evidence``)."""
        if obs.subject == obs.observer:
            return "self"
        if obs.subject == self.me:
            return "about_me"
        if severity(obs.classes, self.config) <= 0.0:
            return "no_evidence"
        book = self._by_observer.setdefault(obs.observer, {})
        old = book.get(obs.subject)
        if old is not None and (old.obs.seq, old.obs.round) >= (obs.seq, obs.round):
            return "older"
        book.pop(obs.subject, None)
        book[obs.subject] = _Entry(obs, now_round, relay)
        while len(book) > self.config.max_subjects:  # bounded per observer: the oldest goes
            del book[next(iter(book))]
        return "kept"

    def forget(self, peer: str) -> None:
        """Drop everything ``peer`` observed (e.g. the receiver evicted it)."""
        self._by_observer.pop(peer, None)

    def prune(self, now_round: int) -> None:
        """Drop observations older than ``ttl_rounds``."""
        ttl = self.config.ttl_rounds
        for observer in list(self._by_observer):
            book = self._by_observer[observer]
            for subject in [s for s, e in book.items() if now_round - e.received >= ttl]:
                del book[subject]
            if not book:
                del self._by_observer[observer]

    def hint(
        self,
        subject: str,
        now_round: int,
        trust: Callable[[str], float],
        checked: Mapping[int, float] | None = None,
    ) -> float:
        """In ``[0, 1]``: the strongest fresh, unrefuted observation on ``subject``, times the receiver's
        trust in its observer (``trust(peer)`` in ``[0, 1]``; a relayed one at most ``relayed_trust`` and the
        relay's trust). ``checked``: the receiver's own ratios for ``subject`` per class it can measure; an
        observation accusing such a class that the receiver saw at or below ``ratio_ok`` is refuted."""
        cfg = self.config
        best = 0.0
        for observer, book in self._by_observer.items():
            entry = book.get(subject)
            if entry is None or now_round - entry.received >= cfg.ttl_rounds:
                continue
            if checked is not None and any(
                c in checked and checked[c] <= cfg.ratio_ok for c, _ in entry.obs.classes
            ):
                continue
            t = _unit(trust(observer))
            if entry.relay is not None:
                t = min(t, cfg.relayed_trust, _unit(trust(entry.relay)))
            best = max(best, t * severity(entry.obs.classes, cfg))
        return best

    def factor(
        self,
        subject: str,
        now_round: int,
        trust: Callable[[str], float],
        checked: Mapping[int, float] | None = None,
    ) -> float:
        """The mixing-weight factor for ``subject``: ``1 - max_penalty * hint``, never below
        ``1 - max_penalty``."""
        return 1.0 - self.config.max_penalty * self.hint(subject, now_round, trust, checked)


def _unit(x: float) -> float:
    return min(1.0, max(0.0, x)) if math.isfinite(x) else 0.0
