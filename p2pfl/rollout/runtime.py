"""The peer's side of the rollout: quality of each new own version, the policy's events, what is served.

:meth:`Rollout.after_round` runs in the peer's worker thread once per round, before the round is persisted:
it evaluates the new version (``p2pfl.quality``), compares it with the base (the serving version, the
configured ``base_seq``, or with the rollout off the previous version), runs :class:`RolloutPolicy` and
returns the metrics for the round's version record plus one signed-record entry per rollout event. The host
application reads :meth:`serving`, :meth:`model_for` and submits :meth:`submit_feedback` from other threads:
one lock guards the state. :meth:`quality_snapshot` and :meth:`status` take no lock: they read objects that
are replaced whole, never changed in place, so the peer's trio loop (status, metrics) never waits for an
evaluation running in the worker thread.

Every promotion, demotion, rollback and canary start is also a log event (``p2pfl.logs.EVENTS``) carrying
the peer's id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from p2pfl.learner import Learner, ScoringLearner
from p2pfl.logs import event
from p2pfl.quality import EMPTY, Quality, deltas, quality
from p2pfl.rollout.config import RolloutConfig
from p2pfl.rollout.feedback import FeedbackBuffer, FeedbackError
from p2pfl.rollout.models import ModelStore
from p2pfl.rollout.policy import (
    CANARY,
    DEMOTE,
    EVENTS,
    PROMOTE,
    ROLLBACK,
    Event,
    RolloutPolicy,
    RolloutState,
    replay,
    routes_to_canary,
)
from p2pfl.state import LogRecord
from p2pfl.state.checkpoint import Params

log = logging.getLogger("p2pfl.peer")


@dataclass(frozen=True)
class Served:
    """The model a request gets: version ``seq``, ``role`` "serving" or "canary", and its parameters
    (shared with the peer, not copied per request: read them, do not write to them)."""

    seq: int
    role: str
    params: Params


@dataclass
class RoundQuality:
    """What :meth:`Rollout.after_round` adds to a round: version-record metrics and rollout records."""

    metrics: dict[str, float]
    entries: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class Rollout:
    """Quality deltas, serving vs training version, shadow/canary (docs/rollout.md)."""

    def __init__(
        self, cfg: RolloutConfig, learner: Learner, directory: Path | None, peer_id: str, network_id: str
    ) -> None:
        self.cfg = cfg
        self.learner = learner
        self.peer_id = peer_id
        if cfg.enabled and not isinstance(learner, ScoringLearner):
            log.warning(
                "[rollout] is enabled but %s exposes no class probabilities (p2pfl.learner.ScoringLearner): "
                "no ΔAUC/ΔF1, so candidates wait in shadow and the first version stays served",
                type(learner).__name__,
            )
        self.policy = RolloutPolicy(cfg)
        self.models = ModelStore(directory, peer_id, network_id)
        self.feedback = FeedbackBuffer(cfg.feedback_limit)
        self._lock = threading.RLock()
        self._digests: dict[int, bytes] = {}
        self._val_quality: dict[int, Quality] = {}  # by seq: the validation split does not change
        #: by (seq, feedback samples accepted so far): only the current feedback's figures are kept
        self._fb_quality: dict[tuple[int, int], Quality] = {}
        self._newest: tuple[int, Params] | None = None
        self._snapshot: dict[str, float] = {}
        self._previous_quality: Quality | None = None
        self._n_classes: int | None = None
        #: candidates promoted by the policy since start (the first version served is not counted)
        self.promotions = 0
        #: candidates demoted, and serving versions rolled back after their promotion, since start
        self.demotions = 0
        self.rollbacks = 0

    # ------------------------------------------------------------------------------ restart

    def restore(self, records: Sequence[LogRecord]) -> None:
        """Rebuild the state from the version log: its rollout records say what is served and tested."""
        with self._lock:
            for r in records:
                if r.event in ("version", *EVENTS):
                    self._digests[r.seq] = r.digest
            state = replay((r.event, r.seq) for r in records)
            if state.serving is not None and self.models.get(state.serving) is None:
                state = replay([])  # the served model is gone: serve the next version afresh
            if state.candidate is not None and self.models.get(state.candidate) is None:
                state = type(state)(state.serving, state.previous)
            self.policy.state = state

    # ------------------------------------------------------------------------------ quality

    def _scores(self, params: Params, with_feedback: bool) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        learner = self.learner
        assert isinstance(learner, ScoringLearner)
        x, y = learner.validation_data()
        fx, fy = self.feedback.snapshot() if with_feedback else (None, y[:0])
        if fx is not None and len(fy):
            x = np.concatenate([np.asarray(x, np.float32), fx])
            y = np.concatenate([np.asarray(y, np.int64), fy])
        return learner.predict_proba(x, params), y

    def _quality(self, params: Params, seq: int | None = None, with_feedback: bool = False) -> Quality:
        with_feedback = with_feedback and len(self.feedback) > 0  # none yet: the validation-only figure
        if seq is not None and not with_feedback and seq in self._val_quality:
            return self._val_quality[seq]
        fb_key = (seq, self.feedback.accepted) if seq is not None and with_feedback else None
        if fb_key is not None and fb_key in self._fb_quality:  # same version, same feedback as before
            return self._fb_quality[fb_key]
        if not isinstance(self.learner, ScoringLearner):
            ev = self.learner.evaluate(params)
            q = Quality(ev.accuracy, ev.loss, None, None, ev.samples)
        else:
            probs, y = self._scores(params, with_feedback)
            q = quality(probs, y) if len(y) else EMPTY
        if seq is not None and not with_feedback:
            self._val_quality[seq] = q
        if fb_key is not None:
            self._fb_quality = {k: v for k, v in self._fb_quality.items() if k[1] == fb_key[1]}
            self._fb_quality[fb_key] = q
        return q

    def _base(self) -> int | None:
        return self.cfg.base_seq if self.cfg.base_seq is not None else self.policy.state.serving

    # ------------------------------------------------------------------------------ rounds

    def after_round(self, round_: int, seq: int, digest: bytes, params: Params) -> RoundQuality:
        """Evaluate version ``seq`` (``params``), update the rollout; blocking (run it in a worker thread)."""
        with self._lock:
            self._digests[seq] = digest
            self._newest = (seq, params)
            q_new = self._quality(params, seq if self.cfg.enabled else None)  # off: nothing to cache
            metrics = q_new.as_metrics()
            if not self.cfg.enabled:
                metrics.update(deltas(q_new, self._previous_quality))
                self._previous_quality = q_new
                self._snapshot = {**metrics, "serving_seq": float(seq)}
                return RoundQuality(metrics)
            if seq == self.cfg.base_seq:
                self.models.put(seq, params, round_)
            before = self.policy.state
            events = self.policy.start(seq)
            for ev in events:
                if ev.seq == seq:
                    self.models.put(seq, params, round_)
            base = self._base()
            base_params = None if base is None else self.models.get(base)
            if base_params is not None and base is not None and base != seq:
                metrics.update(deltas(q_new, self._quality(base_params, base)))
                metrics["base_seq"] = float(base)
            events += self._watch_serving()
            cand = self._judge()
            events += cand[1]
            self.promotions += sum(1 for e in cand[1] if e.kind == PROMOTE)
            self.demotions += sum(1 for e in events if e.kind == DEMOTE)
            self.rollbacks += sum(1 for e in events if e.kind == ROLLBACK)
            self._keep()
            self._snapshot = {**metrics, **self._state_numbers(), **cand[0]}
            entries = [self._entry(ev, round_) for ev in events]
            self._log_events(before, events)
            return RoundQuality(metrics, entries, events)

    def _log_events(self, state: RolloutState, events: Sequence[Event]) -> None:
        """One log event per canary start, promotion, demotion (info) and rollback (warning: a served version
        turned out worse), see ``p2pfl.logs.EVENTS``; the state before each event says what it replaced. A
        shadow start changes nothing served: a debug line only."""
        for ev in events:
            d_auc, d_f1 = ev.deltas.get("delta_auc"), ev.deltas.get("delta_f1")
            fields: dict[str, Any] = {
                "version": ev.seq,
                "reason": ev.reason,
                "delta_auc": d_auc,
                "delta_f1": d_f1,
            }
            what = f"peer={self.peer_id} version={ev.seq}"
            if ev.kind == PROMOTE:
                fields["from_version"] = state.serving
                log.info(
                    "rollout promotion %s from_version=%s reason=%s", what, state.serving, ev.reason,
                    extra=event("promotion", peer_id=self.peer_id, **fields),
                )  # fmt: skip
            elif ev.kind == ROLLBACK:
                fields["from_version"] = state.serving
                log.warning(
                    "rollout rollback %s from_version=%s reason=%s", what, state.serving, ev.reason,
                    extra=event("rollback", peer_id=self.peer_id, **fields),
                )  # fmt: skip
            elif ev.kind == DEMOTE:
                fields |= {"phase": state.phase, "serving_version": state.serving}
                log.info(
                    "rollout demotion %s phase=%s reason=%s", what, state.phase, ev.reason,
                    extra=event("demotion", peer_id=self.peer_id, **fields),
                )  # fmt: skip
            elif ev.kind == CANARY:
                fields |= {"serving_version": state.serving, "canary_fraction": self.cfg.canary_fraction}
                log.info(
                    "rollout canary %s fraction=%s reason=%s", what, self.cfg.canary_fraction, ev.reason,
                    extra=event("canary", peer_id=self.peer_id, **fields),
                )  # fmt: skip
            else:
                log.debug("rollout %s %s reason=%s", ev.kind, what, ev.reason)
            state = state.apply(ev)

    def _judge(self) -> tuple[dict[str, float], list[Event]]:
        """The candidate against the serving version on validation data plus feedback."""
        s = self.policy.state
        if s.candidate is None or s.serving is None:
            return {}, []
        cand, serving = self.models.get(s.candidate), self.models.get(s.serving)
        if cand is None or serving is None:
            return {}, []
        d = deltas(
            self._quality(cand, s.candidate, with_feedback=True),
            self._quality(serving, s.serving, with_feedback=True),
        )
        return {f"candidate_{k}": v for k, v in d.items()}, self.policy.judge(d)

    def _watch_serving(self) -> list[Event]:
        """A freshly promoted version against the one it replaced, on validation data plus feedback."""
        s = self.policy.state
        if s.watch <= 0 or not s.previous or s.serving is None:
            return []
        now, before = self.models.get(s.serving), self.models.get(s.previous[-1])
        if now is None or before is None:
            return []
        d = deltas(
            self._quality(now, s.serving, with_feedback=True),
            self._quality(before, s.previous[-1], with_feedback=True),
        )
        return self.policy.judge_serving(d)

    def _keep(self) -> None:
        s = self.policy.state
        keep = {x for x in (s.serving, s.candidate, self.cfg.base_seq, *s.previous) if x is not None}
        self.models.keep(keep)
        for seq in [k for k in self._val_quality if k not in keep]:
            del self._val_quality[seq]
        self._fb_quality = {k: v for k, v in self._fb_quality.items() if k[0] in keep}

    def _state_numbers(self) -> dict[str, float]:
        s = self.policy.state
        out = {"serving_seq": float(s.serving)} if s.serving is not None else {}
        if s.candidate is not None:
            out["candidate_seq"] = float(s.candidate)
        return out

    def _entry(self, ev: Event, round_: int) -> dict[str, Any]:
        return {
            "event": ev.kind,
            "seq": ev.seq,
            "round": round_,
            "digest": self._digests.get(ev.seq, b""),
            "metrics": dict(ev.deltas),
            "reason": ev.reason,
            "timestamp_ms": int(time.time() * 1000),
        }

    # ------------------------------------------------------------------------------ the host's side

    def serving(self) -> Served | None:
        """The version served to the host (the newest own version when the rollout is off)."""
        with self._lock:
            if not self.cfg.enabled or self.policy.state.serving is None:
                if self._newest is None:
                    return None
                return Served(self._newest[0], "serving", self._newest[1])
            seq = self.policy.state.serving
            params = self.models.get(seq)
            return None if params is None else Served(seq, "serving", params)

    def model_for(self, key: str | bytes) -> Served | None:
        """The model for request ``key``: the canary for ``canary_fraction`` of the keys (by hash, so a key
        always gets the same answer) while a candidate is in canary, else the serving version."""
        with self._lock:
            s = self.policy.state
            canary = self.cfg.enabled and s.phase == "canary" and s.candidate is not None
            if canary and s.candidate is not None and routes_to_canary(key, self.cfg.canary_fraction):
                params = self.models.get(s.candidate)
                if params is not None:
                    return Served(s.candidate, "canary", params)
            return self.serving()

    def submit_feedback(self, x: Any, y: Any) -> int:
        """Keep labelled samples for evaluating candidates; returns how many are kept. Raises
        :class:`FeedbackError` for inputs the model cannot take (the message says what is wrong)."""
        learner = self.learner
        if not isinstance(learner, ScoringLearner):
            raise FeedbackError(
                f"{type(learner).__name__} exposes no class probabilities (p2pfl.learner.ScoringLearner): "
                "feedback cannot be evaluated"
            )
        vx, _ = learner.validation_data()
        if self._n_classes is None:
            if len(vx) == 0:
                raise FeedbackError("the learner has no validation data to infer the model's classes from")
            self._n_classes = int(learner.predict_proba(vx[:1]).shape[1])
        return self.feedback.add(x, y, feature_shape=tuple(vx.shape[1:]), n_classes=self._n_classes)

    def quality_snapshot(self) -> Mapping[str, float]:
        """The newest version's ``val_*`` quality, its ``delta_auc``/``delta_f1`` against the base, the
        serving and candidate seqs and the candidate's deltas (absent keys: not defined yet). Lock-free
        (the dict is replaced whole once per round): safe and non-blocking on the peer's loop."""
        return dict(self._snapshot)

    def trace_row(self) -> dict[str, Any]:
        """What a simulation records per round (simulations/report.py): deltas, serving seq, promotions."""
        with self._lock:
            q = self._snapshot
            return {
                "d_auc": q.get("delta_auc"),
                "d_f1": q.get("delta_f1"),
                "serving": q.get("serving_seq"),
                "promotions": self.promotions,
            }

    def status(self) -> dict[str, Any]:
        """What is served and tested, and the event counts since start. Lock-free like
        :meth:`quality_snapshot` (the policy's state and ``_newest`` are replaced whole, never changed)."""
        s, newest = self.policy.state, self._newest
        return {
            "enabled": self.cfg.enabled,
            "serving_seq": s.serving if self.cfg.enabled else (newest[0] if newest else None),
            "candidate_seq": s.candidate,
            "phase": s.phase,
            "passed": s.passed,
            "feedback": len(self.feedback),
            "promotions": self.promotions,
            "demotions": self.demotions,
            "rollbacks": self.rollbacks,
        }


def promoted(events: Sequence[Event]) -> list[int]:
    """The seqs promoted by ``events`` (for reports)."""
    return [e.seq for e in events if e.kind == PROMOTE]
