"""The round loop's side of :mod:`p2pfl.protocol.solo`: log the solo events, and hold a paused peer until a
neighbour's new version arrives (it keeps serving, readmitting expired evictions and forgetting idle
identities, meanwhile)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from p2pfl.logs import event
from p2pfl.peer_serve import tend_identities
from p2pfl.protocol.solo import SoloConfig, SoloTracker

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
        """While paused: wait until a neighbour's version arrives that the last mix did not hold (or the peer
        is stopped, or ``until()``, :meth:`~p2pfl.peer.Peer.run`'s condition, is true)."""
        stopped = loop._p.stopped
        engine = loop._p.engine
        while not stopped.is_set() and not self.tracker.may_run(_new_version(loop)):
            if until is not None and until():
                return
            loop._replica_updated = trio.Event()
            with trio.move_on_after(HOLD_POLL_S):
                await loop._replica_updated.wait()
            # readmit expired evictions as a round would: an evicted only neighbour must be able to wake us
            await tend_identities(engine, loop._p.exchange.execute, trio.current_time())

    def status(self) -> dict[str, int | bool]:
        return self.tracker.status()


def _new_version(loop: RoundLoop) -> bool:
    """Whether a non-evicted neighbour's replica moved on since the last mix."""
    engine, held = loop._p.engine, loop._held_at_mix
    return any(held.get(p) != r.seq for p, r in engine.replicas.items() if not engine.is_evicted(p))
