"""The peer's round loop: runs the rounds and each round's steps.

Each round: wait for the neighbours' new versions (``protocol.pacing``), start from the own (mixed) model,
train ``local_steps`` in a worker thread (the trio loop keeps serving the network meanwhile), evaluate the new
replica versions on the own validation split (``ValLossCache``), let the engine publish the trained model and
mix it with one snapshot of the replicas, let the own-data guards decide what the round keeps
(``protocol.guards``), write the checkpoint and the version log (``PeerStore``; before broadcasting: a crash
can never reuse a version number), then broadcast and evict (``Exchange``).

The policies are pure and live in ``p2pfl.protocol``; :class:`RoundLoop` asks them with trio's clock, so a
test's MockClock drives every wait. It holds the parts of the :class:`~p2pfl.peer.Peer` it needs (engine,
learner, store, exchange) the way ``Exchange`` and ``PeerDiscovery`` do, and owns the round's counters.

Split where the loop stops waiting: the start gate, the join and the pacing waits are its base
(:class:`~p2pfl.peer_waits.RoundWaits`), what it is given and reports are values
(:mod:`p2pfl.peer_round_parts`, re-exported here), and extra mixing steps are :mod:`p2pfl.peer_mixing`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import trio

from p2pfl.config.schema import derive
from p2pfl.learner import EvalResult, TrainResult, reset_optimizer
from p2pfl.peer_mixing import extra_mixes
from p2pfl.peer_round_parts import SUBSCRIBE_GRACE_S as SUBSCRIBE_GRACE_S  # noqa: PLC0414 (re-export)
from p2pfl.peer_round_parts import Params as Params  # noqa: PLC0414 (re-export)
from p2pfl.peer_round_parts import PrivateRelease as PrivateRelease  # noqa: PLC0414 (re-export)
from p2pfl.peer_round_parts import RoundParts as RoundParts  # noqa: PLC0414 (re-export)
from p2pfl.peer_round_parts import RoundReport as RoundReport  # noqa: PLC0414 (re-export)
from p2pfl.peer_round_parts import RunSync as RunSync  # noqa: PLC0414 (re-export)
from p2pfl.peer_round_parts import guard_config as guard_config  # noqa: PLC0414 (re-export)
from p2pfl.peer_round_parts import pacing_config as pacing_config  # noqa: PLC0414 (re-export)
from p2pfl.peer_solo import SoloWatch
from p2pfl.peer_store import finite_or_none, now_ms
from p2pfl.peer_waits import RoundWaits
from p2pfl.protocol import Replica, RoundOutcome, ValLossCache
from p2pfl.protocol.guards import RollbackGuard, RoundDecision, check_trained, decide_round
from p2pfl.protocol.mixing import MixConfig, MixLedger
from p2pfl.protocol.pacing import learners, next_round_at
from p2pfl.scoring.specialist import foreign_class
from p2pfl.wire import Meta

log = logging.getLogger("p2pfl.peer")


class RoundLoop(RoundWaits):
    """Runs the peer's rounds; owns the round counter, the reports and the guards' state."""

    def __init__(self, parts: RoundParts) -> None:
        super().__init__(parts)
        config = parts.config
        self.round = 0
        self.reports: list[RoundReport] = []
        self.last_eval: EvalResult | None = None
        self.local_divergences = 0
        self.mixes_refused = 0
        #: how many neighbour models have been evaluated for scoring (one per new version)
        self.val_evaluations = 0
        #: each candidate replica's loss on the own validation split, by its version (see _step)
        self._val_cache = ValLossCache()
        self._classes: frozenset[int] | None = None
        self._guard_config = guard_config(config)
        self._guard = (
            RollbackGuard(margin=config.rollback_margin, warmup=config.rollback_warmup)
            if config.rollback_margin
            else None
        )
        self._round_lock = trio.Lock()
        self._started = False
        #: several mixing steps per round (p2pfl.protocol.mixing): the versions the last mix took
        self._mix = derive(MixConfig, config)
        self._ledger = MixLedger()
        #: extra mixing steps run (and skipped: nothing new from the neighbours) since start
        self.mix_steps_run = 0
        self.mix_steps_skipped = 0
        #: solo rounds (no neighbour's model mixed), the pause after ``solo_rounds`` of them (p2pfl.peer_solo)
        self.solo = SoloWatch(config.solo_rounds)

    # ------------------------------------------------------------------------------ the loop

    async def run(self, rounds: int | None, until: Callable[[], bool] | None) -> list[RoundReport]:
        """Run rounds until ``rounds`` more are done, ``until()`` is true, or the peer is stopped."""
        done: list[RoundReport] = []
        stopped = self._p.stopped
        if not self._started:
            self._started = True
            await self._await_neighbours()
            if self._p.config.join_on_start:
                await self.join(adopt=self._p.engine.seq == 0)
        while not stopped.is_set() and (rounds is None or len(done) < rounds):
            if until is not None and until():
                break
            # paused after solo_rounds solo rounds: until a neighbour's version
            await self.solo.hold(self, until)
            if stopped.is_set() or (until is not None and until()):
                break
            if (done or self.round > 0) and not self._pacing.wait_before_mix:
                await self._wait_for_neighbours()
            started = trio.current_time()
            done.append(await self.step())
            if self._p.rotate is not None:
                await self._p.rotate(self.round)
            next_at = next_round_at(started, self._pacing)
            if next_at > trio.current_time():
                with trio.move_on_at(next_at):
                    await stopped.wait()
        return done

    # ------------------------------------------------------------------------------ one round

    async def step(self) -> RoundReport:
        """One round (:meth:`p2pfl.peer.Peer.step`)."""
        async with self._round_lock:
            return await self._step()

    async def _step(self) -> RoundReport:
        engine, exchange = self._p.engine, self._p.exchange
        t0 = trio.current_time()
        # the connected, subscribed neighbours (not the secure-aggregation fellows: they mute us and are not
        # scored one by one): founders if in contact within the founding rounds, whether or not their first
        # version has arrived (a peer slow from the start: docs/scoring.md)
        engine.note_contacts(learners(self._views(t0)), t0)
        await exchange.execute(engine.readmissions(t0))
        start = engine.own.copy()
        train, trained = await self._train()
        group = self._p.secagg()
        if group is not None:  # only the group's mean leaves this peer (docs/secagg.md)
            mean = await group.mean(self.round + 1, engine.layout.flatten(trained))
            trained = engine.layout.unflatten(start if mean is None else mean)
        # wait_before_mix: publish now, then wait for the neighbours' versions of this round (with DP the
        # release is decided with the mix, at the end of the round, as without it)
        published = self._pacing.wait_before_mix and self._p.privacy is None
        self._last_wait_s = 0.0
        if published:
            await self._publish_first(
                trained, Meta(samples=train.samples, loss=finite_or_none(train.loss), round=self.round + 1)
            )
            self._last_wait_s = await self._wait_for_neighbours()
        # one snapshot of the candidates (their versions as of now) is evaluated, scored and mixed
        candidates = [
            replace(r)
            for r in engine.mixing_candidates(trio.current_time())
            if group is None or not group.is_fellow(r.peer)  # a fellow publishes the mean we have
        ]
        trained_eval, val_losses, own_val, specialists = await self._evaluate(candidates, trained)
        self.round += 1
        private = await self._private_release(trained)
        outcome: RoundOutcome = engine.finish_round(
            trained,
            trio.current_time(),
            meta=private.meta(self.round)
            if private is not None
            else Meta(samples=train.samples, loss=finite_or_none(train.loss), round=self.round),
            timestamp_ms=now_ms(),
            val_losses=val_losses,
            own_val_loss=own_val,
            val_specialists=specialists,
            candidates=candidates,
            **(private.engine_args() if private is not None else {}),
            already_published=published,
        )
        self.mark_mix()
        self._ledger.record((r.peer, r.seq) for r in candidates)
        decision = await self._guard_round(trained, trained_eval)
        await self._persist(train, outcome, decision, private)
        await exchange.execute(outcome.actions)
        if self._mix.mix_steps > 1:
            # (not under DP, secure aggregation or a rollout: each version there is a release or a candidate)
            rollout = self._p.rollout is not None and self._p.rollout.cfg.enabled
            private_ = private is not None or group is not None or rollout
            outcome = await extra_mixes(self, start, outcome, private=private_)
        await self._p.write_status()
        report = self._report(train, outcome, decision, duration_s=trio.current_time() - t0, private=private)
        # the next waits' pace: this round without its waits (the wait inside it reads the last round's)
        self._last_work_s = report.duration_s - self._last_wait_s
        self.solo.after_round(report, group_round=group is not None)
        self.reports.append(report)
        if self._p.on_round is not None:
            self._p.on_round(report)
        return report

    async def _private_release(self, trained: Params) -> PrivateRelease | None:
        """With ``[privacy]``: whether this round may publish, its header claim and the model it publishes
        (p2pfl.privacy); ``None`` with DP off."""
        privacy = self._p.privacy
        if privacy is None:
            return None
        seq = self._p.engine.seq
        if not await self._p.run_sync(privacy.may_publish, seq):  # the accountant: off the loop
            note = privacy.note_exhausted(seq, self._p.engine.peer_id)
            return PrivateRelease(False, None, None, privacy.spent(seq), note)
        public = self._p.engine.public_params()
        release = privacy.to_publish(trained, public)
        claim = privacy.claim(seq)
        return PrivateRelease(True, release, claim, claim.epsilon, None)

    async def _publish_first(self, trained: Params, meta: Meta) -> None:
        """``wait_before_mix``: publish the trained model before waiting for the neighbours' versions. The
        checkpoint moves to the new version first (a crash never reuses a version number); the version
        record, with the mix's contributions, follows at the end of the round."""
        p = self._p
        publish = p.engine.publish_trained(trained, meta=meta, timestamp_ms=now_ms())
        await p.run_sync(p.store.checkpoint, p.engine, self.round, {})
        await p.exchange.execute([publish])

    async def _persist(
        self,
        train: TrainResult,
        outcome: RoundOutcome,
        decision: RoundDecision[EvalResult],
        private: PrivateRelease | None = None,
    ) -> None:
        """The checkpoint and the version log, before the broadcast (a crash never reuses a version)."""
        ev = decision.evaluation
        metrics = {"train_loss": train.loss, "val_loss": ev.loss}
        if ev.accuracy is not None:
            metrics["val_accuracy"] = ev.accuracy
        if private is not None:
            metrics["privacy_epsilon"] = private.epsilon_after
        p = self._p
        extra: list[dict[str, Any]] = []
        version = private is None or private.publish  # False: the budget is spent, no new version
        if p.rollout is not None and version:  # quality, deltas and rollout events (p2pfl.rollout)
            own = p.engine.own_params()
            q = await p.run_sync(p.rollout.after_round, self.round, outcome.seq, outcome.digest, own)
            metrics.update(q.metrics)
            extra = q.entries
        notes = list(decision.notes)
        if private is not None and private.note is not None:
            notes.append(("privacy_exhausted", private.note))
        await p.persist(self.round, outcome, metrics, notes, extra=extra, version=version)

    def _report(
        self,
        train: TrainResult,
        outcome: RoundOutcome,
        decision: RoundDecision[EvalResult],
        *,
        duration_s: float,
        private: PrivateRelease | None = None,
    ) -> RoundReport:
        ev = decision.evaluation
        report = RoundReport(
            round=self.round,
            seq=outcome.seq,
            train_loss=train.loss,
            val_loss=ev.loss,
            val_accuracy=ev.accuracy,
            neighbours=len(self._p.neighbours()),
            mixed=len(outcome.contributions),
            evicted=outcome.evicted,
            rolled_back=decision.rolled_back,
            duration_s=duration_s,
            mix_refused=decision.mix_refused,
        )
        if private is not None:
            report.published = private.publish
            report.privacy_epsilon = private.epsilon_after
        return report

    async def _train(self) -> tuple[TrainResult, Params]:
        """Local training from the own model; a diverged step is discarded (the round keeps the start)."""
        learner = self._p.learner
        start = self._p.engine.own_params()
        learner.set_params(start)
        train = await self._p.run_sync(learner.train, self._p.config.local_steps)
        trained = learner.get_params()
        if not check_trained(trained):
            # a diverged local step must never reach the network (the wire would refuse it anyway)
            self.local_divergences += 1
            log.error("local training diverged (non-finite parameters): this round's update is discarded")
            trained = start
            learner.set_params(start)
            # the optimiser's momentum is non-finite too and carries over rounds: drop it, or every later
            # round diverges again from any start (ResettableLearner)
            if not reset_optimizer(learner) and self.local_divergences == 1:
                log.warning("the learner has no reset_optimizer(): its optimiser state may stay non-finite")
        return train, trained

    async def _evaluate(
        self, candidates: Sequence[Replica], trained: Params
    ) -> tuple[EvalResult | None, dict[str, float] | None, float | None, frozenset[str]]:
        """(the trained model's evaluation, the candidates' validation losses, the trained model's loss,
        the candidates whose model answers one class the own split lacks): what scoring by validation loss
        and the mix guard need, evaluated in a worker thread."""
        learner, config, run_sync = self._p.learner, self._p.config, self._p.run_sync
        if config.scoring_enabled and config.val_scoring and candidates:
            jobs = self._val_cache.plan(candidates)  # on the loop: versions and read-only copies
            layout = self._p.engine.layout
            share = config.scoring.specialist_share
            own_classes = self._own_classes() if share is not None else None

            def evaluate_all() -> tuple[list[float], list[bool], EvalResult]:
                # the learner gets a writable copy of each read-only job (torch warns on read-only arrays)
                results = [learner.evaluate(layout.unflatten(j.vec.copy())) for j in jobs]
                specialists = [
                    share is not None
                    and own_classes is not None
                    and math.isfinite(res.loss)
                    and foreign_class(res.predicted, own_classes, share) is not None
                    for res in results
                ]
                return [res.loss for res in results], specialists, learner.evaluate(trained)

            fresh_losses, fresh_specialists, evaluated = await run_sync(evaluate_all)
            self._val_cache.record(jobs, fresh_losses, fresh_specialists)
            self.val_evaluations += len(jobs)
            if math.isfinite(evaluated.loss):
                losses = self._val_cache.losses(candidates)
                return evaluated, losses, evaluated.loss, self._val_cache.specialists(candidates)
            return evaluated, None, None, frozenset()
        if config.mix_guard_margin is not None and candidates:
            return await run_sync(learner.evaluate, trained), None, None, frozenset()
        return None, None, None, frozenset()

    def _own_classes(self) -> frozenset[int] | None:
        """The classes of the own validation split (``None``: the learner does not show its labels)."""
        if self._classes is None:
            # by attribute, not isinstance(ScoringLearner): a wrapper that forwards through __getattr__
            # (the metrics' timed learner) is no protocol instance from Python 3.12 on
            validation_data = getattr(self._p.learner, "validation_data", None)
            if validation_data is None:
                return None
            _, labels = validation_data()
            self._classes = frozenset(int(c) for c in np.unique(np.asarray(labels)))
        return self._classes

    async def _guard_round(
        self, trained: Params, trained_eval: EvalResult | None
    ) -> RoundDecision[EvalResult]:
        """Evaluate the mix, then let the guards decide what the round keeps (p2pfl.protocol.guards)."""
        engine, learner = self._p.engine, self._p.learner
        mixed = engine.own_params()
        learner.set_params(mixed)
        mixed_eval = await self._p.run_sync(learner.evaluate)
        decision = decide_round(
            self.round, trained_eval, mixed_eval, trained, mixed, cfg=self._guard_config, rollback=self._guard
        )
        if decision.params_source != "mixed":
            engine.set_own(decision.params)
            learner.set_params(decision.params)
        for line in decision.logs:
            log.warning("%s", line)
        self.mixes_refused += decision.mix_refused
        self.last_eval = decision.evaluation
        return decision
