"""Persistent distance: evidence that accumulates across rounds instead of being judged one round at a time.

A single round's normalised distance ``r = |x_i - centre| / median distance`` (see
:mod:`p2pfl.scoring.scorer`) is noisy: an honest non-IID neighbour spikes to ``r`` 3-7 now and then, so the
per-round score can only punish far-out models (``dist_cutoff``, ``dist_hard``). A model poisoned by
training on wrong labels (label-flip) stays inside that per-round spread early on, then drifts away from the
honest models as they converge, and stays away: version after version. :class:`PersistentDistance` keeps,
per neighbour, the ``r`` of its last ``window`` scored versions (each version once) and judges their
*smallest*: the distance the neighbour kept in every one of them.

* :meth:`weight`: with a full window, 1 while that smallest ``r`` is at most ``soft``, falling linearly to 0
  at ``hard``; the scorer multiplies the neighbour's mixing weight by it.
* :meth:`far`: ``window`` versions tracked and the smallest ``r`` at least ``hard``; with ``persist_evict``
  the scorer then counts the version as bad (towards eviction after ``evict_after`` consecutive bad ones).

One honest spike cannot trigger it (every version of the window must be far), and a neighbour that comes
closer is released at once (unlike a moving average, which would keep a converging late joiner "far" for
several more versions). The thresholds (``soft`` 3, ``hard`` 4) sit above the honest spread of non-IID
graphs: on attacks16 (digits, Dirichlet 0.3, random 6-regular) honest pairs kept ``r`` at most 2.6 and
label-flip attackers passed 3 at rounds 13-19, but at Dirichlet 0.1 honest neighbours holding classes no
other neighbour holds reach ``r`` 2.5, and the earlier ramp from 2 to 3 held them out, which fed itself: a
neighbour held out of the mixes drifts further (honest ``r`` up to 12.8; no attack, random 4-regular: 78.6 %
instead of 87.3 % with the median rule). With 3 / 4 label-flippers keep more than 0.1 of a mix a few
rounds longer (docs/scoring.md, simulations/benchmarks-matrix.md, session 30).

Failure modes (also in docs/scoring.md): an attacker that knows ``soft`` and ``hard`` can publish a version
closer than ``soft`` every ``window`` versions (its displacement in between is still bounded by self-centred
clipping and the per-round distance score); ALIE and IPM models sit *closer* to the centre than honest ones
and are not caught by this signal at all; an honest peer whose data differ from all its neighbours' for long
is held out of the mix for as long (on a dumbbell with Dirichlet(0.1) data, peers holding one or two
classes: why ``persist_evict`` is off by default). A returning neighbour's far-off first versions are not
tracked while it has grace (the scorer calls :meth:`reset`).

Pure: no clock, no randomness; the caller feeds one ``r`` per scored version.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from p2pfl.errors import ConfigError
from p2pfl.scoring.numbers import is_real

__all__ = ["PersistenceConfig", "PersistentDistance", "persistence_reason", "persistently_far"]


@dataclass(frozen=True)
class PersistenceConfig:
    """Thresholds of :class:`PersistentDistance`; ``ConfigError("scoring", field, reason)`` when invalid."""

    #: consecutive scored versions judged together
    window: int = 4
    #: while the smallest ``r`` of the window is at or below this, the neighbour keeps its full weight
    soft: float = 3.0
    #: at or above this its weight is 0 and (with a full window) its versions count as bad
    hard: float = 4.0

    def __post_init__(self) -> None:
        w = self.window
        if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= 1000:
            raise ConfigError("scoring", "persist_window", f"must be an integer in [1, 1000], got {w!r}")
        if not (is_real(self.soft) and is_real(self.hard) and 0.0 < self.soft < self.hard):
            raise ConfigError(
                "scoring",
                "persist_soft/persist_hard",
                f"need 0 < persist_soft < persist_hard < inf, got {self.soft!r}, {self.hard!r}",
            )


class PersistentDistance:
    """Per-neighbour window of normalised distances ``r`` (see the module doc)."""

    def __init__(self, config: PersistenceConfig | None = None) -> None:
        self.config = config if config is not None else PersistenceConfig()
        self._seen: dict[str, deque[float]] = {}

    def observe(self, peer: str, r: float) -> float:
        """Add one scored version's ``r`` to ``peer``'s window; return the window's smallest ``r``. A
        non-finite or negative ``r`` counts as ``hard`` (it may neither release nor convict on its own)."""
        value = r if math.isfinite(r) and r >= 0.0 else self.config.hard
        seen = self._seen.setdefault(peer, deque(maxlen=self.config.window))
        seen.append(value)
        return min(seen)

    def kept(self, peer: str) -> float | None:
        """The smallest ``r`` of ``peer``'s window, ``None`` before its first tracked version."""
        seen = self._seen.get(peer)
        return min(seen) if seen else None

    def weight(self, peer: str) -> float:
        """Mixing-weight factor in ``[0, 1]``: 1 up to ``soft``, linear to 0 at ``hard``; 1 until the window
        is full (one far version decides nothing)."""
        seen = self._seen.get(peer)
        cfg = self.config
        if seen is None or len(seen) < cfg.window:
            return 1.0
        kept = min(seen)
        if kept <= cfg.soft:
            return 1.0
        if kept >= cfg.hard:
            return 0.0
        return (cfg.hard - kept) / (cfg.hard - cfg.soft)

    def far(self, peer: str) -> bool:
        """Whether ``peer`` stayed at ``r >= hard`` in each of its last ``window`` versions."""
        seen = self._seen.get(peer)
        return seen is not None and len(seen) == self.config.window and min(seen) >= self.config.hard

    def reset(self, peer: str) -> None:
        """Forget ``peer``'s window (grace after a silence, readmission, departure)."""
        self._seen.pop(peer, None)

    def __len__(self) -> int:
        """Peers with a window (bounded with the scorer's records: p2pfl.protocol.churn)."""
        return len(self._seen)


def persistently_far(tracker: PersistentDistance | None, peer: str, r: float, *, settled: bool) -> bool:
    """The scorer's hook: track ``peer``'s distance ratio ``r`` and say whether it stayed beyond ``hard``
    for a full window. Only a *settled* neighbour is tracked (the scorer decides: established, after the
    founding rounds, outside grace and probation, and with enough distances setting the median); any other
    one's window is forgotten, since a young identity or one on probation passes only versions within
    ``dist_ok`` anyway, a returning peer's far-off first versions are expected, and a median of 3 or 4
    distances is too noisy (a 4-peer non-IID network lost 1-2 points of accuracy to down-weighting)."""
    if tracker is None:
        return False
    if not settled:
        tracker.reset(peer)
        return False
    tracker.observe(peer, r)
    return tracker.far(peer)


def persistence_reason(config: PersistenceConfig) -> str:
    """The reason a persistently far version scores 0 (with ``persist_evict``)."""
    return f"persistently far: r >= {config.hard} in each of its last {config.window} versions"
