"""Each neighbour's publishing period, and from it how old a neighbour's last version may be before the round
pacing stops waiting for it (p2pfl.protocol.pacing, "No single neighbour sets the pace"). Pure: the caller
passes what it sees of its neighbours; split out of :mod:`p2pfl.protocol.pacing` for its length."""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from p2pfl.protocol.pacing import NeighbourView, PacingConfig

#: intervals kept per neighbour for its period; neighbours tracked at most (least recently updated dropped)
_PERIOD_SAMPLES = 5
_PERIOD_PEERS = 1024


class PeriodTracker:
    """Each neighbour's publishing period: the median of its last few (time between versions / versions).

    The medians are kept, not recomputed: a round's wait asks :meth:`late_after` on every pass (each
    arrival wakes it), and a period changes only when a neighbour's new version arrives."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, float]] = {}
        self._intervals: dict[str, deque[float]] = {}
        #: each neighbour's period (the median of its intervals), updated with them
        self._period: dict[str, float] = {}

    def observe(self, views: Sequence[NeighbourView]) -> None:
        for v in views:
            if v.seq is None or v.last_update is None:
                continue
            prev = self._last.get(v.peer)
            if prev is not None and v.seq > prev[0] and v.last_update > prev[1]:
                per = (v.last_update - prev[1]) / (v.seq - prev[0])
                samples = self._intervals.setdefault(v.peer, deque(maxlen=_PERIOD_SAMPLES))
                samples.append(per)
                self._period[v.peer] = statistics.median(samples)
            if prev is None or v.seq != prev[0]:
                self._last[v.peer] = (v.seq, v.last_update)
        while len(self._last) > _PERIOD_PEERS:
            oldest = min(self._last, key=lambda p: self._last[p][1])
            del self._last[oldest]
            self._intervals.pop(oldest, None)
            self._period.pop(oldest, None)

    def period(self, peer: str) -> float | None:
        return self._period.get(peer)

    def late_after(
        self, views: Sequence[NeighbourView], cfg: PacingConfig, work_s: float | None = None
    ) -> float:
        """How old a neighbour's last version may be before it is late (module docstring); ``work_s``: our
        own last round without its wait. A work time of 0 (under the clock's resolution: a MockClock whose
        peers work inline) is a measurement, and the pace is then the floor ``min_late_s``. Read as unknown
        it left ``max_round_wait_s`` on a clock that never measures a period either (every version at one
        reading): a finished neighbour, awaited as in step with ``wait_before_mix``, held the mix 30 s (3
        peers in lock step, tests/determinism/test_pacing_ties.py: 2-6 runs of 20)."""
        period = self._period
        periods = sorted(p for v in views if not v.evicted and (p := period.get(v.peer)) is not None)
        pace = periods[(len(periods) - 1) // 2] if periods else None
        if work_s is not None:
            own = cfg.work_factor * max(0.0, work_s)
            pace = own if pace is None else min(pace, own)
        if pace is None:
            return cfg.max_round_wait_s
        return min(cfg.max_round_wait_s, max(cfg.min_late_s, cfg.period_factor * pace))
