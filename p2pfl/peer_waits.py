"""What the peer's round loop waits for: the start gate, the join, and the neighbours' new versions.

Split out of :mod:`p2pfl.peer_rounds` because waiting is the loop's one dealing with time and the network's
pace, while a round's steps (train, evaluate, mix, guard, persist, broadcast) are not: before the first
round, neighbours and their subscriptions (``StartGate``), then the join from their snapshots (``JoinPlan``);
before each round or its mix, enough neighbours' new versions (``RoundPacer``), pulling what gossip did not
deliver. The policies are pure (``p2pfl.protocol.pacing``, ``p2pfl.protocol.join``); :class:`RoundWaits` asks
them with trio's clock, so a test's MockClock drives every wait. It is the base of
:class:`~p2pfl.peer_rounds.RoundLoop` and owns the pacing's state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import trio

from p2pfl.peer_round_parts import RoundParts, RoundReport, pacing_config
from p2pfl.protocol import Start
from p2pfl.protocol.join import JoinPlan
from p2pfl.protocol.pacing import (
    ConnectionClock,
    NeighbourView,
    RoundPacer,
    StartGate,
    learners,
    unsubscribed,
)

log = logging.getLogger("p2pfl.peer")


class RoundWaits:
    """The round loop's waits (a base of :class:`~p2pfl.peer_rounds.RoundLoop`); owns the pacing's state."""

    #: the loop's reports (the last one's duration paces the next wait)
    reports: list[RoundReport]
    #: the rounds done (the next wait precedes round ``round + 1``, or its mix)
    round: int

    def __init__(self, parts: RoundParts) -> None:
        self._p = parts
        self._pacing = pacing_config(parts.config)
        self._pacer = RoundPacer(self._pacing)
        #: connected neighbour -> when we first saw it connected (trio clock)
        self._connections = ConnectionClock()
        self._replica_updated = trio.Event()
        self._last_mix = -math.inf
        #: each neighbour's version we held at the last mix: tells a reply to it at the same clock reading
        #: from the version it mixed (p2pfl.protocol.pacing.is_new)
        self._held_at_mix: dict[str, int] = {}
        #: how long this round waited for the neighbours so far (``wait_before_mix``: before its mix or
        #: mixes; else 0), and the last round's work: its duration without those waits (the pace's anchor)
        self._last_wait_s = 0.0
        self._last_work_s: float | None = None

    def mark_mix(self) -> None:
        """A mix just ended: the pacing's next wait counts what arrives from now on as new."""
        self._last_mix = trio.current_time()
        self._held_at_mix = {p: r.seq for p, r in self._p.engine.replicas.items()}

    def note_update(self) -> None:
        """A replica got a new version: wake a pacing wait."""
        self._replica_updated.set()  # the event is replaced for each wait: look it up now

    def _views(self, now: float) -> list[NeighbourView]:
        """What the pacing sees of the connected neighbours at ``now``: fellow members of our secure-
        aggregation group excepted (they send us no announcements: we hold the mean they publish; the group
        round itself keeps members in step), and neighbours the engine never mixes (its mix filter:
        ``mix_scope = "chosen"`` keeps no version of a link this peer did not choose, so waiting for one only
        ran every round into its time limit)."""
        connected = self._p.neighbours()
        first_seen = self._connections.observe(connected, now)
        group = self._p.secagg()
        if group is not None:
            connected = [p for p in connected if not group.is_fellow(p)]
        engine = self._p.engine
        if engine.mix_filter is not None:
            connected = [p for p in connected if engine.mix_filter(p)]
        listeners = set(self._p.transport().listeners())
        replicas, is_evicted = engine.replicas, engine.is_evicted
        views = []
        for p in connected:
            rep = replicas.get(p)
            # the round is sender-reported: it tells a neighbour ahead of us (pacing). Version 0 is the model
            # a join fetched, not a version: the neighbour has published nothing yet. Taken for one, the first
            # mix of the same-round order counted every joined neighbour fresh, started at once, mixed the
            # others' start models and ran a round ahead of them from then on (docs/learning.md, session 29)
            if rep is None or rep.seq == 0:
                views.append(NeighbourView(p, first_seen[p], p in listeners, None, is_evicted(p)))
            else:
                views.append(
                    NeighbourView(
                        p,
                        first_seen[p],
                        p in listeners,
                        rep.updated_at,
                        is_evicted(p),
                        rep.seq,
                        rep.meta.round,
                    )
                )
        return views

    async def _await_neighbours(self) -> None:
        """Before the first round: neighbours, then their subscriptions (see p2pfl.protocol.pacing)."""
        gate = StartGate(self._pacing, trio.current_time())
        while not self._p.stopped.is_set():
            now = trio.current_time()
            views = self._views(now)
            count = len(self._learners(views))
            decision = gate.decide(now, count, len(unsubscribed(now, views, self._pacing)))
            if isinstance(decision, Start):
                self._log_start(decision.reason, count)
                return
            await trio.sleep_until(decision.until)

    def _learners(self, views: list[NeighbourView] | None = None) -> list[str]:
        """The neighbours that count towards ``min_neighbours`` and that the join asks for snapshots:
        subscribed learners (a peer of another network or a registry never subscribes:
        p2pfl.protocol.pacing.learners) and the connected fellows of our secure-aggregation group (they mute
        us, so never subscribe, but learn with us). A peer of another network answered the join with a
        snapshot the engine refused, and that answer counted towards the join's quorum."""
        if views is None:
            views = self._views(trio.current_time())
        group = self._p.secagg()
        fellows = [] if group is None else [p for p in self._p.neighbours() if group.is_fellow(p)]
        return learners(views) + fellows

    def _log_start(self, reason: str, count: int) -> None:
        """One line when the start gate opens: with whom, and why (connections that are not learners are
        the tell of a peer connected only to another network's peers)."""
        config = self._p.config
        connected = len(self._p.neighbours())
        if reason == "timeout":
            log.warning(
                "starting with %d of min_neighbours=%d learning neighbours after %.0f s (%d connected)",
                count,
                config.min_neighbours,
                config.start_timeout_s,
                connected,
            )
        else:
            log.info("starting: %d learning neighbours of %d connected (%s)", count, connected, reason)

    async def _wait_for_neighbours(self) -> float:
        """Before a round (or its mix, ``wait_before_mix``): until enough neighbours sent a new version
        (see p2pfl.protocol.pacing). Returns how long it waited."""
        started = trio.current_time()
        self._pacer.begin_wait(
            started, self._last_mix, self._last_work_s, self._held_at_mix, next_round=self.round + 1
        )
        # a resumed peer's first wait also asks the neighbours it holds nothing of (p2pfl.protocol.snapshots)
        ask_missing = self._last_mix == -math.inf and self.round > 0
        while True:
            now = trio.current_time()
            views = self._views(now)
            # renew what a quiet neighbour (e.g. finished, serving) last sent before it goes stale
            renew = self._p.engine.renewals(learners(views), now, missing=ask_missing)
            await self._p.exchange.execute(renew)
            if not views and self._p.secagg() is not None:
                return now - started  # only fellows: the group round paces us (its advertise wait)
            decision = self._pacer.decide(now, views, stopped=self._p.stopped.is_set())
            if isinstance(decision, Start):
                return now - started
            missing = self._pacer.pull_due(now, views)
            if missing:  # wait_before_mix: pull what gossip has not delivered (p2pfl.protocol.pacing)
                await self._p.exchange.execute(self._p.engine.request_snapshots(missing, now))
            self._replica_updated = trio.Event()
            with trio.move_on_at(decision.until):  # or earlier, when a replica is updated
                await self._replica_updated.wait()

    async def join(self, adopt: bool) -> None:
        """Fetch snapshots from the connected peers and start from their median (``adopt``: a fresh peer) or
        from the median of theirs and its own (resuming from a checkpoint); see p2pfl.protocol.join."""
        config = self._p.config
        plan = JoinPlan(
            quorum=config.join_quorum,
            timeout_s=config.join_timeout_s,
            request_timeout_s=config.request_timeout_s,
            adopt=adopt,
            started_at=trio.current_time(),
        )
        snaps = await self._p.exchange.fetch_snapshots(plan, self._learners)
        if snaps:
            self._join_from(plan, snaps)
            # a conviction met in the snapshots: evict (disconnect) the sender and relay the proof now
            await self._p.exchange.execute(self._p.engine.take_actions())

    def _join_from(self, plan: JoinPlan, snaps: Mapping[str, bytes]) -> None:
        exchange = self._p.exchange
        try:
            used = self._p.engine.join_from_snapshots(snaps, trio.current_time(), resume=not plan.adopt)
        except Exception as exc:  # each snapshot is checked on its own (never raises): this is a bug
            exchange.unexpected(None, "join", exc)
            return
        finally:
            exchange.log_faults()
            exchange.log_rejections()
        if plan.apply(used):
            self._p.learner.set_params(self._p.engine.own_params())
            log.info("%s from the median of %d snapshots", "joined" if plan.adopt else "resumed", used)
