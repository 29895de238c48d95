"""Rate limits for log lines that remote peers can trigger at will. Pure: the caller passes ``now``."""

from __future__ import annotations

import math
from collections.abc import Hashable


class RateLimiter:
    """Allows one event per key per ``interval`` seconds; remembers at most ``max_keys`` keys (then starts
    afresh), however many identities send bad input."""

    def __init__(self, interval: float, max_keys: int = 1024) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[Hashable, float] = {}

    def allow(self, key: Hashable, now: float) -> bool:
        if now - self._last.get(key, -math.inf) < self.interval:
            return False
        if len(self._last) >= self.max_keys and key not in self._last:
            self._last.clear()
        self._last[key] = now
        return True
