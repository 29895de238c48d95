"""A fake group network for GroupRound: a message queue, a fake clock, crashes and a man in the middle."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from p2pfl.identity import Identity
from p2pfl.secagg import FixedPoint, GroupRound, GroupSpec, Phase, Send

#: (src, dst, data) -> the messages actually delivered to dst (empty: dropped)
Tamper = Callable[[int, int, bytes], list[bytes]]


def det_rand(seed: int) -> Callable[[int], bytes]:
    """Deterministic randomness for a member (tests only)."""
    counter = [0]

    def randbytes(n: int) -> bytes:
        counter[0] += 1
        return hashlib.shake_256(b"%d|%d" % (seed, counter[0])).digest(n)

    return randbytes


def identities(n: int, seed: int = 0) -> list[Identity]:
    return [Identity(hashlib.sha256(b"member|%d|%d" % (seed, i)).digest()) for i in range(n)]


@dataclass
class Net:
    """``n`` members (by their index in the spec) running one round over a reliable, ordered queue."""

    n: int = 8
    t: int = 5
    dim: int = 64
    seed: int = 0
    round: int = 1
    fixed: FixedPoint = field(default_factory=FixedPoint)
    xs: dict[int, npt.NDArray[np.float32]] | None = None
    #: member -> the phase at which it crashes (it sends nothing from that phase on)
    crash: dict[int, Phase] = field(default_factory=dict)
    tamper: Tamper | None = None
    now: float = 0.0

    def __post_init__(self) -> None:
        ids = identities(self.n, self.seed)
        self.spec = GroupSpec(
            "net", tuple(i.peer_id for i in ids), self.t, self.dim, fixed=self.fixed, phase_timeout_s=10.0
        )
        self.ident = {self.spec.index(i.peer_id): i for i in ids}
        rng = np.random.default_rng(self.seed)
        if self.xs is None:
            self.xs = {k: rng.uniform(-1, 1, self.dim).astype(np.float32) for k in range(self.n)}
        self.rounds = {
            k: GroupRound(
                self.spec,
                self.ident[k],
                self.round,
                self.xs[k],
                now=self.now,
                randbytes=det_rand(self.seed * 1000 + self.round * 100 + k),
            )
            for k in range(self.n)
        }
        self.queue: deque[tuple[int, int, bytes]] = deque()
        self.dead: set[int] = set()
        self.delivered: list[tuple[int, int, bytes]] = []

    def _out(self, k: int, sends: list[Send]) -> None:
        if k in self.crash and self.rounds[k].phase >= self.crash[k]:
            self.dead.add(k)
        if k in self.dead:
            return
        for s in sends:
            for dst in s.to:
                self.queue.append((k, dst, s.data))

    def inject(self, dst: int, data: bytes) -> None:
        self.queue.append((-1, dst, data))

    def run(self, max_steps: int = 20_000) -> Net:
        for k, r in self.rounds.items():
            self._out(k, r.start())
        for _ in range(max_steps):
            if self.queue:
                src, dst, data = self.queue.popleft()
                if dst in self.dead:
                    continue
                datas = self.tamper(src, dst, data) if self.tamper is not None and src >= 0 else [data]
                for d in datas:
                    self.delivered.append((src, dst, d))
                    self._out(dst, self.rounds[dst].receive(d, self.now))
                continue
            live = [r for k, r in self.rounds.items() if k not in self.dead and not r.done]
            if not live:
                return self
            self.now = min(r.deadline for r in live) + 0.001
            for k, r in self.rounds.items():
                if k not in self.dead:
                    self._out(k, r.tick(self.now))
        raise AssertionError("the round did not end within max_steps")

    def alive(self) -> list[int]:
        return [k for k in range(self.n) if k not in self.dead]

    def plain_mean(self, members: list[int] | tuple[int, ...]) -> npt.NDArray[np.float64]:
        assert self.xs is not None
        b = self.fixed.bound
        return np.mean([np.clip(self.xs[k].astype(np.float64), -b, b) for k in members], axis=0)
