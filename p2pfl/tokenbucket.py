"""Token buckets by key, for the engine's rate limits and the bootstrap registry's per-peer limit (pure: time
is passed in; standard library only, so the registry imports nothing heavy)."""

from __future__ import annotations

from collections import OrderedDict


class Buckets:
    """``rate`` tokens per second up to ``burst`` per key; a new key starts full. At most ``max_keys`` are
    kept (least recently used forgotten: a forgotten key restarts full)."""

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._b: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._b)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._b.get(key, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def peek(self, key: str, now: float) -> bool:
        """Whether ``key`` has a token now (nothing is spent)."""
        return self._tokens(key, now) >= 1.0

    def wait(self, key: str, now: float) -> float:
        """Spend one token of ``key`` and return 0; if it has none, spend nothing and return the seconds until
        it has one."""
        tokens = self._tokens(key, now)
        ok = tokens >= 1.0
        self._b[key] = (tokens - 1.0 if ok else tokens, now)
        self._b.move_to_end(key)
        while len(self._b) > self.max_keys:
            self._b.popitem(last=False)
        return 0.0 if ok else (1.0 - tokens) / self.rate

    def prune(self, now: float) -> int:
        """Drop the keys refilled to ``burst`` at ``now`` (a new key starts full: nothing changes for them);
        returns how many were dropped. Keeps the table to the keys active within ``burst / rate`` seconds."""
        full = [
            k for k, (tokens, at) in self._b.items() if tokens + max(0.0, now - at) * self.rate >= self.burst
        ]
        for key in full:
            del self._b[key]
        return len(full)

    def take(self, key: str, now: float) -> bool:
        """Spend one token of ``key``; False (nothing spent) if it has none."""
        return self.wait(key, now) == 0.0
