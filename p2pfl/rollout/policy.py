"""The rollout policy: which own version is served, which is under test, and when that changes. Pure.

The peer calls :meth:`RolloutPolicy.step` once per round with the newest own version and the candidate's
deltas against the serving version (measured by the caller); the policy answers with :class:`Event`s, each of
which the peer writes as a signed version-log record. :func:`replay` rebuilds the state from those records,
so a restarted peer (or ``p2pfl versions``) serves what the log says. No clock and no I/O: rounds are
counted by the calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from p2pfl.rollout.config import RolloutConfig

#: version-log events of the rollout (``manual`` in the reason marks an operator's ``p2pfl versions``)
SHADOW: Final = "rollout_shadow"
CANARY: Final = "rollout_canary"
PROMOTE: Final = "rollout_promote"
DEMOTE: Final = "rollout_demote"
ROLLBACK: Final = "rollout_rollback"
EVENTS: Final = (SHADOW, CANARY, PROMOTE, DEMOTE, ROLLBACK)
#: how many earlier serving versions are remembered (and their models kept) for a rollback
HISTORY: Final = 3


@dataclass(frozen=True)
class Event:
    """A change of the rollout state: ``kind`` is one of :data:`EVENTS`, ``seq`` the version it is about."""

    kind: str
    seq: int
    reason: str
    deltas: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutState:
    serving: int | None = None
    #: earlier serving versions, the most recent last (a rollback returns to ``previous[-1]``)
    previous: tuple[int, ...] = ()
    candidate: int | None = None
    phase: str | None = None  # "shadow" or "canary" while there is a candidate
    #: rounds the candidate has passed in its current phase
    passed: int = 0
    #: rounds left in which a freshly promoted version is still compared with the one it replaced (a drop
    #: rolls serving back); not kept across a restart
    watch: int = 0

    def apply(self, event: Event) -> RolloutState:
        """The state after ``event`` (also how :func:`replay` reads a log)."""
        if event.kind == SHADOW:
            return replace(self, candidate=event.seq, phase="shadow", passed=0)
        if event.kind == CANARY:
            return replace(self, candidate=event.seq, phase="canary", passed=0)
        if event.kind == DEMOTE:
            return replace(self, candidate=None, phase=None, passed=0)
        if event.kind == PROMOTE:
            previous = self.previous
            if self.serving is not None and self.serving != event.seq:
                previous = (*previous, self.serving)[-HISTORY:]
            candidate = None if self.candidate == event.seq else self.candidate
            phase, passed = (self.phase, self.passed) if candidate else (None, 0)
            return RolloutState(event.seq, previous, candidate, phase, passed)
        if event.kind == ROLLBACK:
            previous = tuple(s for s in self.previous if s != event.seq)
            return RolloutState(event.seq, previous, None, None, 0)
        return self


def replay(events: Iterable[tuple[str, int]]) -> RolloutState:
    """The state the rollout records ``(event, seq)`` of a version log lead to (others are ignored)."""
    state = RolloutState()
    for kind, seq in events:
        if kind in EVENTS:
            state = state.apply(Event(kind, seq, ""))
    return state


def _failures(deltas: Mapping[str, float], cfg: RolloutConfig) -> list[str]:
    out = []
    for name, floor in (("delta_auc", cfg.min_delta_auc), ("delta_f1", cfg.min_delta_f1)):
        if name in deltas and not deltas[name] >= floor:  # NaN fails too
            out.append(f"{name}={deltas[name]:+.4f} < {floor:+.4f}")
    return out


class RolloutPolicy:
    """Shadow, canary, promote or demote; one decision per round (see :class:`RolloutConfig`)."""

    def __init__(self, cfg: RolloutConfig, state: RolloutState | None = None) -> None:
        self.cfg = cfg
        self.state = state or RolloutState()

    def _emit(self, event: Event, out: list[Event]) -> None:
        self.state = self.state.apply(event)
        out.append(event)

    def start(self, newest: int) -> list[Event]:
        """Before judging a round: serve ``newest`` if nothing is served yet, and pick a candidate if none is
        under test. The caller measures the candidate's deltas afterwards and passes them to :meth:`judge`."""
        out: list[Event] = []
        if self.state.serving is None:
            self._emit(Event(PROMOTE, newest, "first version: nothing was served"), out)
        elif self.state.candidate is None and newest != self.state.serving:
            phase = SHADOW if self.cfg.shadow_rounds > 0 else CANARY
            self._emit(Event(phase, newest, "newest own version is the candidate"), out)
        return out

    def judge_serving(self, deltas: Mapping[str, float]) -> list[Event]:
        """After a promotion, for ``promote_after`` rounds: the serving version against the one it replaced
        (``delta_*`` = serving minus previous, on validation data plus the newest feedback). A drop below the
        thresholds rolls serving back to the previous version."""
        s = self.state
        if s.watch <= 0 or not s.previous or s.serving is None:
            return []
        failed = _failures(deltas, self.cfg)
        if not failed:
            self.state = replace(s, watch=s.watch - 1)
            return []
        back = s.previous[-1]
        reason = (
            f"serving seq {s.serving} dropped after its promotion: {', '.join(failed)}; back to seq {back}"
        )
        out: list[Event] = []
        self._emit(Event(ROLLBACK, back, reason, dict(deltas)), out)
        return out

    def judge(self, deltas: Mapping[str, float]) -> list[Event]:
        """One round of evidence about the candidate (``delta_auc``/``delta_f1`` against the serving version;
        a missing delta is not judged, no delta at all holds the candidate where it is)."""
        s, cfg = self.state, self.cfg
        out: list[Event] = []
        if s.candidate is None:
            return out
        failed = _failures(deltas, cfg)
        if failed:
            where = "canary traffic rolled back to" if s.phase == "canary" else "stays behind"
            reason = f"{s.phase} round {s.passed + 1}: {', '.join(failed)}; {where} serving seq {s.serving}"
            self._emit(Event(DEMOTE, s.candidate, reason, dict(deltas)), out)
            return out
        if not deltas:
            return out
        self.state = replace(s, passed=s.passed + 1)
        s = self.state
        assert s.candidate is not None
        if s.phase == "shadow" and s.passed >= cfg.shadow_rounds:
            self._emit(Event(CANARY, s.candidate, f"passed {s.passed} shadow round(s)", dict(deltas)), out)
        elif s.phase == "canary" and s.passed >= cfg.promote_after:
            reason = f"passed {s.passed} canary round(s); replaces seq {s.serving}"
            self._emit(Event(PROMOTE, s.candidate, reason, dict(deltas)), out)
            self.state = replace(self.state, watch=cfg.promote_after)
        return out


def routes_to_canary(key: str | bytes, fraction: float) -> bool:
    """Whether request ``key`` goes to the canary: a hash of the key, so the same key always gets the same
    answer for a given ``fraction`` (and a key in the canary at a fraction stays in it at a larger one)."""
    data = key.encode() if isinstance(key, str) else bytes(key)
    h = int.from_bytes(hashlib.blake2b(data, digest_size=8, person=b"p2pfl-canary").digest(), "big")
    return h < fraction * 2**64
