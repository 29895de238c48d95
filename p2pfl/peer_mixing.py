"""The round loop's extra mixing steps (``mix_steps``; policy in :mod:`p2pfl.protocol.mixing`): a part of
:class:`p2pfl.peer_rounds.RoundLoop` kept in its own module (size), using the loop's parts (engine,
exchange, store, pacing waits, evaluation and guards) as the round's first mix does."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import trio

from p2pfl.peer_store import now_ms
from p2pfl.protocol import RoundOutcome
from p2pfl.protocol.mixing import shut_out, step_due

if TYPE_CHECKING:
    from p2pfl.peer_rounds import RoundLoop


async def extra_mixes(
    loop: RoundLoop, start: npt.NDArray[np.float32], outcome: RoundOutcome, *, private: bool
) -> RoundOutcome:
    """Mixing steps 2 .. ``mix_steps`` of this round (p2pfl.protocol.mixing): each publishes the own
    mix as a new version, waits for the neighbours' next versions (the round pacing, same rules) and
    mixes them, scored like any version (peers an earlier step of the round gave no weight aside); the
    guards and the checkpoint run as after the first mix. Returns the last step's outcome (or
    ``outcome`` when no step ran), with every step's evictions."""
    p = loop._p
    engine, exchange = p.engine, p.exchange
    evicted = list(outcome.evicted)
    out = shut_out((c.peer, c.weight) for c in outcome.contributions)
    for step in range(2, loop._mix.mix_steps + 1):
        if private or p.stopped.is_set():
            loop.mix_steps_skipped += loop._mix.mix_steps + 1 - step
            break
        own = engine.own_params()
        publish = engine.publish_mix(own, timestamp_ms=now_ms(), round_=loop.round)
        await p.run_sync(p.store.checkpoint, engine, loop.round, {})  # before the broadcast
        await exchange.execute([publish])
        loop._last_wait_s += await loop._wait_for_neighbours()
        now = trio.current_time()
        candidates = [replace(r) for r in engine.mixing_candidates(now) if r.peer not in out]
        fresh = loop._ledger.fresh({r.peer: r.seq for r in candidates})
        if not step_due(step, loop._mix, fresh, stopped=p.stopped.is_set()):
            # nothing new to mix: the version (our mix) is out, its record has no contributions
            loop.mix_steps_skipped += loop._mix.mix_steps + 1 - step
            alone = RoundOutcome([], engine.seq, engine.public_digest, [], {}, [])
            await p.persist(loop.round, alone, {})
            break
        own_eval, val_losses, own_val, specialists = await loop._evaluate(candidates, own)
        outcome = engine.finish_round(
            own,
            trio.current_time(),
            val_losses=val_losses,
            own_val_loss=own_val,
            val_specialists=specialists,
            candidates=candidates,
            already_published=True,
            round_start=engine.layout.unflatten(start),
            extra_step=True,
        )
        out |= shut_out((c.peer, c.weight) for c in outcome.contributions)
        loop.mark_mix()
        loop._ledger.record((r.peer, r.seq) for r in candidates)
        loop.mix_steps_run += 1
        decision = await loop._guard_round(own, own_eval)
        metrics = {"val_loss": decision.evaluation.loss}
        await p.persist(loop.round, outcome, metrics, list(decision.notes))
        await exchange.execute(outcome.actions)
        evicted += outcome.evicted
    return replace(outcome, evicted=evicted)
