"""The round loop's side of :mod:`p2pfl.protocol.solo`: log the solo events, and hold a paused peer until a
neighbour's news (:func:`~p2pfl.protocol.solo.woken`) arrives: it keeps serving, readmitting expired
evictions and forgetting idle identities meanwhile, and asks its connected neighbours for the versions it
lacks or holds stale (``GossipEngine.renewals``: a finished neighbour publishes nothing more)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from p2pfl.logs import event
from p2pfl.peer_serve import tend_identities
from p2pfl.protocol.pacing import learners
from p2pfl.protocol.solo import SoloConfig, SoloTracker, woken

if TYPE_CHECKING:
    from p2pfl.peer_rounds import RoundLoop, RoundReport

log = logging.getLogger("p2pfl.peer")

#: how often a paused peer looks at its stop flag and forgets idle identities (a new version wakes it at once)
HOLD_POLL_S = 1.0


class SoloWatch:
    """One peer's solo tracker, its log lines and the hold of a paused peer."""

    def __init__(self, pause_after: int) -> None:
        self.tracker = SoloTracker(SoloConfig(pause_after))

    def after_round(self, report: RoundReport, *, group_round: bool) -> None:
        """Count the round (``report.mixed``: the neighbour models its mix took) and log a change."""
        ev = self.tracker.observe(report.mixed, group_round=group_round)
        n = self.tracker.rounds
        if ev == "solo":
            log.warning(
                "solo round %d: no neighbour's model to mix; training on the own data alone",
                report.round,
                extra=event("solo", round=report.round, solo_rounds=n),
            )
        elif ev == "paused":
            log.warning(
                "paused after %d solo rounds in a row: no round until a neighbour's version arrives "
                "([peer] solo_rounds = 0 trains on alone)",
                n,
                extra=event("solo_paused", round=report.round, solo_rounds=n),
            )
        elif ev == "rejoined":
            log.info(
                "mixing neighbours again at round %d",
                report.round,
                extra=event("solo_ended", round=report.round),
            )

    async def hold(self, loop: RoundLoop, until: Callable[[], bool] | None = None) -> None:
        """While paused: wait until a neighbour's news arrives (a version the last mix did not hold, or one
        mixable again that it did not take), or the peer is stopped, or ``until()``,
        :meth:`~p2pfl.peer.Peer.run`'s condition, is true."""
        stopped = loop._p.stopped
        engine, execute = loop._p.engine, loop._p.exchange.execute
        while not stopped.is_set() and not self.tracker.may_run(_news(loop)):
            if until is not None and until():
                return
            # ask the connected neighbours for what we lack or hold stale (a finished one never publishes)
            now = trio.current_time()
            await execute(engine.renewals(learners(loop._views(now)), now, missing=True))
            loop._replica_updated = trio.Event()
            with trio.move_on_after(HOLD_POLL_S):
                await loop._replica_updated.wait()
            # readmit expired evictions as a round would: an evicted only neighbour must be able to wake us
            await tend_identities(engine, execute, trio.current_time())

    def status(self) -> dict[str, int | bool]:
        return self.tracker.status()


def _news(loop: RoundLoop) -> bool:
    """Whether a non-evicted neighbour has news since the last mix (p2pfl.protocol.solo.woken)."""
    engine = loop._p.engine
    held = {p: r.seq for p, r in engine.replicas.items() if not engine.is_evicted(p)}
    mixable = {r.peer: r.seq for r in engine.mixing_candidates(trio.current_time())}
    return woken(loop._held_at_mix, held, loop._ledger.taken, mixable)
