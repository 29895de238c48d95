"""When a peer starts learning and when it starts each round. Pure: the caller passes ``now`` (trio's clock,
so a test's MockClock drives it) and what it sees of its neighbours; it gets a :class:`Wait` or a
:class:`Start` back.

*Start gate* (before the first round): wait at most ``start_timeout_s`` for ``min_neighbours`` connected
learners: a peer that starts learning alone drifts away on its own data before the others come online. A
learner is a connected peer subscribed to our announcements (:func:`learners`), not any connection: a peer
of another network (its topics are its network's) or a registry never subscribes, and counting them let a
peer that had only another network's peers connected start alone after the subscription wait (seen in
every run of the two-networks CLI test: a beta peer ran solo rounds, 10 s each, beside two alpha peers). Then
let every connected learner subscribe to our announcements (at most ``subscribe_grace_s`` + 1 s): a first
version published before a neighbour subscribed never reaches it, and a neighbour that hears only one of
its peers in its first rounds mixes that one alone, poisoner or not (measured: 2 of 6 runs of a 4-peer
libp2p scenario where honest peers mixed only a sign-flipper's model for 3 rounds and ended < 50%).

*Round pacing* (self-clocking without global rounds): before each mix (the old order: before each round
but the first; "Where the wait sits"), wait until ``wait_fraction`` of the publishing neighbours sent a new
version since our last mix (at most ``max_round_wait_s``), so a fast peer does not race ahead on its own
data while its neighbours' updates are in flight. A peer that needs neighbours (``min_neighbours >= 1``)
and has none connected waits the full ``max_round_wait_s``: training alone gains little and would leave it
far from the network it is about to join.

*New since the last mix.* A neighbour's version is new if we applied it after our last mix: later on the
clock, or at the same clock reading but not the version we held when we mixed (``mixed``). On a clock that
does not move between a mix and the next arrival (a MockClock whose peers work inline, a coarse OS clock)
the time alone would call every reply to our mix old; in lock step every wait then ran to
``max_round_wait_s`` (measured, 48 peers on a MockClock: 190 of 190 waits ended by timeout, none by quorum).

*No single neighbour sets the pace.* Each neighbour's publishing period is estimated from the versions we
apply (:class:`PeriodTracker`); a neighbour whose last version is older than ``period_factor`` times the
pace (at least ``min_late_s``, at most ``max_round_wait_s``) is *late* and not waited for. The pace is the
lower median of the neighbours' periods, or ``work_factor`` times our own last round's work (training,
scoring, mixing: the round without its wait; 0 s is a measurement, :mod:`p2pfl.protocol.periods`) if that
is shorter. The work time anchors it because periods feed on waits: with two neighbours, one of them slow,
both periods soon include the wait for the slow one and the median alone would settle there. A neighbour
that publishes every 9 s among peers that publish every 0.5 s therefore delays a round only while its last
version is younger than ~1.5 s, and a flooding neighbour only ever looks fresh (it can help a quorum, never
hold one up). While nothing is known the threshold is ``max_round_wait_s``, the old rule.

*Where the wait sits* (``wait_before_mix``, on by default: the same-round order). A round trains, publishes,
*then* waits and mixes: every peer mixes the same round's trained models, as FedAvg averages them. So the wait
is inside :meth:`~p2pfl.peer.Peer.step`: a host that steps a peer itself gets it too. In the old order
(``wait_before_mix = false``) a round waits before it trains (in :meth:`~p2pfl.peer.Peer.run`, before each
step but the first), then publishes and mixes at once: the neighbours' versions it mixes are of their previous
round, since theirs of this round are still being trained (measured, 16 IID peers on a complete graph: round 1
mixed nothing, later rounds took about a quarter of their inputs from the same round, the rest one to three
rounds old; 77-82% at round 5 where FedAvg reaches 82%, and 23% vs 29% at round 1). The same-round order's
first mix also waits for every subscribed neighbour whose first version is on its way (the wait being at most
``max_round_wait_s``), so round 1 is not mixed from the first two to finish. Gossip does not always deliver
(measured over libp2p, 16 processes on a loaded 2-core machine: some publishers' deltas never reached some
peers, whose replicas fell 1-5 rounds behind): halfway through the wait, the round asks every awaited
neighbour that sent nothing new for a snapshot of its current model (a direct request, at most once per
``snapshot_retry_s`` each), so a lost delivery costs half a wait, not a stale replica.

*The rest of the round* (``wait_before_mix``). Once ``wait_fraction`` of the publishing neighbours sent
their version, the mix still waits up to ``settle_factor`` times our own last round's work for the others
that keep pace, and starts as soon as all of them are in. Without it a neighbour a moment behind the quorum
was mixed a round stale, and when its next version came before our next mix, the one in between was never
mixed nor scored (measured, 5 IID peers on a complete graph, simulated clock: the slowest one, a
sign-flipper, had one version in two skipped at some honest neighbours, and in 4 of 8 seeds one of them
had not evicted it by round 8; with this wait 1 of 8). In the old order the round's training gave a late
version that time. The wait is bounded by our own work, so a slow neighbour costs a fraction of a round.

*Keeping pace* (``wait_before_mix``). A neighbour's lateness counts from its last version, which in this
round order is its previous round's: when our wait starts (after our own training and publish) a neighbour
in step with us is already one round old, and on a loaded machine, where a round is mostly waiting for the
CPU, that age passed the late threshold (``work_factor`` times our own short work) before its version of
this round came in (measured, 16 processes on a 6-regular graph at load 20: one peer mixed 4 of its 6
neighbours one round stale in every round and ended 6 points below the mean). So a neighbour that was fresh
in our last mix (it kept pace) is late only once ``late_after`` has passed since this wait started. A
neighbour that publishes every 9 s is fresh in one mix per 9 s and costs at most one ``late_after`` then.

*Ahead neighbours are not waited for.* A neighbour whose version we held at our last mix and whose round
(``meta.round``, sender-reported) is at least the round this wait precedes is ahead of us: its next version
would be of a round later still, so waiting for it cannot bring our mix closer to it in rounds; only our
own rounds can. A round whose every awaited neighbour is ahead (the others late) starts at once. Without
this rule a peer that fell a few rounds behind (a late start, a lost join request, churn) waited the full
``max_round_wait_s`` in each of its remaining rounds once its neighbours finished and only served (measured:
one peer of a four-peer CLI run finishing 10-61 s after the others, docs/benchmarks.md "Crossing dials at
start-up"), and among publishing neighbours it stayed behind for good, since each of its waits ended only
on their next version. A liar claiming a high round spares us the wait for its own versions; it starts a
round early only once every other awaited neighbour has been silent for ``max_round_wait_s`` (the fixed
bound, not the adaptive ``late_after``, which follows the neighbours' measured pace and can be short). With
``wait_before_mix`` a neighbour is ahead only from the round after the one we are about to mix: its version
of that very round, held at our last mix, came while that mix waited for a slower neighbour, so it is in
step, and not waiting for its next one cost accuracy (measured, bench_network 16 peers: 4 of 4 runs 1.1-2.8
points below main's paired run; with the later threshold level with main, docs/benchmarks.md).

*Nothing to wait for* (``wait_before_mix``). A wait whose every awaited neighbour is late (or, at the first
mix, none is connected or on its way) does not run to ``max_round_wait_s`` when the mix has nothing more to
gain: (1) a fresh peer's first mix, as the old order's first round never waits (the start gate waited for
neighbours; a peer started alone, ``min_neighbours = 0``, waited ``max_round_wait_s`` before mixing nothing,
where the old order mixed nothing at once); (2) when we hold the version of the round we are about to mix of
some awaited neighbours (in step, not ahead: above) and the others have been silent for
``max_round_wait_s``, the bound of the ahead rule: their next version is not worth a full wait. Without (2)
the hub of a star, whose leaves wait only for it and so run a round ahead, waited ``max_round_wait_s`` in
its last round for leaves that had finished (measured, tests/test_peer.py's star on a MockClock: 30 s);
(3) a peer that may learn alone (``min_neighbours = 0``) with no learner connected nor subscribing: the wait
sits inside :meth:`~p2pfl.peer.Peer.step`, so a host stepping a lone peer waited ``max_round_wait_s`` in
every round for nobody (the old order's ``step()`` never waits; its ``run()`` waits before each round). A
peer that needs neighbours (``min_neighbours >= 1``) and lost them all still waits out the bound: that is
the time a neighbour has to come back before the round is a solo round.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from p2pfl.protocol.actions import Decision, Start, Wait
from p2pfl.protocol.periods import PeriodTracker

#: how often the start gate looks at the connections while it waits for ``min_neighbours``
START_POLL_S = 0.1
#: how often it looks at the subscriptions
SUBSCRIBE_POLL_S = 0.05


@dataclass(frozen=True)
class PacingConfig:
    """The pacing knobs; the field names are ``PeerConfig``'s."""

    wait_fraction: float = 0.75
    max_round_wait_s: float = 10.0
    min_neighbours: int = 1
    start_timeout_s: float = 60.0
    round_interval_s: float = 0.0
    #: how long a connected peer may take to subscribe to our announcements before it is taken for a
    #: non-learner (a bootstrap registry never subscribes): gossipsub carries a subscription in its first
    #: RPC, and the topic sync runs every second
    subscribe_grace_s: float = 3.0
    #: how often a round's wait looks again (connections and quiet peers change without an update)
    recheck_s: float = 0.5
    #: a neighbour is late (not waited for) once its last version is older than this many times the median
    #: publishing period of the neighbours ...
    period_factor: float = 3.0
    #: ... or than ``period_factor`` times this many times our own last round's work, if that is shorter
    work_factor: float = 2.0
    #: ... but never sooner than this (periods of a few hundred ms jitter by as much)
    min_late_s: float = 0.5
    #: wait between publishing the trained model and mixing (the same-round order), instead of before training
    #: (module docstring, "Where the wait sits")
    wait_before_mix: bool = True
    #: ``wait_before_mix``: once the quorum is in, how long the mix still waits for the neighbours that keep
    #: pace, as a fraction of our own last round's work (module docstring, "The rest of the round")
    settle_factor: float = 0.5


@dataclass(frozen=True)
class NeighbourView:
    """What the pacing sees of one connected neighbour."""

    peer: str
    #: when we first saw it connected (see :class:`ConnectionClock`)
    first_seen: float
    #: subscribed to our announcements (a learner)
    subscribed: bool
    #: when we last applied a version of its model (None: we hold no replica of it)
    last_update: float | None
    evicted: bool = False
    #: the version of its model we hold (None: no replica), for its publishing period
    seq: int | None = None
    #: the round that version reports (``meta.round``; None: not reported), to tell a neighbour ahead of us
    round: int | None = None


class ConnectionClock:
    """When each connected peer was first seen connected; a peer that disconnects is forgotten."""

    def __init__(self) -> None:
        self.first_seen: dict[str, float] = {}

    def observe(self, peers: Iterable[str], now: float) -> dict[str, float]:
        peers = list(peers)
        for p in peers:
            self.first_seen.setdefault(p, now)
        if len(self.first_seen) > len(peers):
            live = set(peers)
            for p in [p for p in self.first_seen if p not in live]:
                del self.first_seen[p]
        return self.first_seen


def learners(views: Sequence[NeighbourView]) -> list[str]:
    """The connected peers that count towards ``min_neighbours`` (and that a join asks for snapshots):
    subscribed to our announcements and not evicted. Only a learner of our own network subscribes to our
    topic; a connection proves nothing more than a handshake (module docstring)."""
    return [v.peer for v in views if v.subscribed and not v.evicted]


def unsubscribed(now: float, views: Sequence[NeighbourView], cfg: PacingConfig) -> list[str]:
    """Connected peers not (yet) subscribed that connected less than ``subscribe_grace_s`` ago; after that
    a peer is taken for a non-learner (e.g. a registry)."""
    return [v.peer for v in views if not v.subscribed and now - v.first_seen < cfg.subscribe_grace_s]


class StartGate:
    """The wait before the first round (module docstring): neighbours first, then their subscriptions."""

    def __init__(self, cfg: PacingConfig, started_at: float) -> None:
        self.cfg = cfg
        self.started_at = started_at
        #: when the subscription wait ends (None: still waiting for neighbours)
        self.subscribe_deadline: float | None = None

    def decide(self, now: float, connected: int, unsubscribed_young: int) -> Decision:
        """``connected``: the learning neighbours (:func:`learners`, plus the peer's secure-aggregation
        fellows); ``unsubscribed_young``: connected peers still within their subscription grace."""
        cfg = self.cfg
        if self.subscribe_deadline is None:
            deadline = self.started_at + cfg.start_timeout_s
            if connected < cfg.min_neighbours:
                if now >= deadline:
                    return Start("timeout")
                return Wait(min(deadline, now + START_POLL_S))
            self.subscribe_deadline = now + cfg.subscribe_grace_s + 1.0
        if not unsubscribed_young:
            return Start("ready")
        if now >= self.subscribe_deadline:
            return Start("subscribe_timeout")
        return Wait(min(self.subscribe_deadline, now + SUBSCRIBE_POLL_S))


def is_new(v: NeighbourView, last_mix: float, mixed: Mapping[str, int] | None = None) -> bool:
    """Whether we applied ``v``'s version after our last mix (module docstring): later on the clock, or at
    the mix's clock reading when it is not the version ``mixed`` says we held then."""
    last = v.last_update
    if last is None:
        return False
    return last > last_mix or (last == last_mix and mixed is not None and v.seq != mixed.get(v.peer))


def is_ahead(
    v: NeighbourView, next_round: int | None, last_mix: float, mixed: Mapping[str, int] | None = None
) -> bool:
    """Whether ``v`` is ahead of us (module docstring): we held its version at our last mix, and that
    version's round is at least ``next_round``, the round the wait precedes (None: unknown, never ahead)."""
    if next_round is None or v.round is None or v.round < next_round:
        return False
    return v.last_update is not None and not is_new(v, last_mix, mixed)


def fresh_neighbours(
    now: float,
    views: Sequence[NeighbourView],
    last_mix: float,
    cfg: PacingConfig,
    late_after: float | None = None,
    *,
    await_pending: bool = False,
    since: Mapping[str, float] | None = None,
    mixed: Mapping[str, int] | None = None,
) -> tuple[int, int, int]:
    """(neighbours updated since the last mix, neighbours still publishing, connected neighbours).

    A neighbour counts as publishing if we applied a version of it within ``late_after`` (default
    ``max_round_wait_s``); one that went quiet (stopped, finished its rounds, of another network) or is
    late for its neighbours' pace (see :class:`PeriodTracker`) is not waited for. A fresh neighbour always
    counts. ``await_pending``: a subscribed neighbour whose first version is on its way counts as
    publishing even when two others already publish, however long ago it connected (the first mix of
    ``wait_before_mix``, itself bounded by ``max_round_wait_s``: peers connect during a start-up that may
    take longer than that, measured 131 s for 16 processes on a loaded 2-core machine, when round 1 then
    mixed 3-4 of 15 neighbours). ``since``: per neighbour, a time from which its lateness counts when that
    is later than its last version (neighbours that kept pace, module docstring). ``mixed``: per neighbour,
    the version we held at the last mix (see :func:`is_new`).
    """
    late_join = cfg.max_round_wait_s
    late = cfg.max_round_wait_s if late_after is None else late_after
    peers = [v for v in views if not v.evicted]
    fresh = active = pending = 0
    for v in peers:
        if is_new(v, last_mix, mixed):
            active += 1
            fresh += 1
        elif v.last_update is not None and now - _late_from(v, since) <= late:
            active += 1
        elif v.last_update is None and v.subscribed and (await_pending or now - v.first_seen <= late_join):
            pending += 1  # a learner whose first version is on its way
    if active < 2 or await_pending:
        # Mixing a lone neighbour model leaves it unjudged (no score can tell one model from its peers):
        # wait for the first versions of the other learners too. Only then: with two or more publishing
        # neighbours a newcomer (or a lurker that never publishes) does not hold up the rounds.
        active += pending
    return fresh, active, len(peers)


def _late_from(v: NeighbourView, since: Mapping[str, float] | None) -> float:
    """From when ``v``'s lateness counts: its last version, or ``since[v.peer]`` when later."""
    last = -math.inf if v.last_update is None else v.last_update
    return max(last, since.get(v.peer, -math.inf)) if since else last


class RoundPacer:
    """The wait before each mix (the old order: before each round but the first; module docstring)."""

    def __init__(self, cfg: PacingConfig) -> None:
        self.cfg = cfg
        self.deadline = -math.inf
        self.last_mix = -math.inf
        #: when the current wait started, and the neighbours that were fresh when the last one ended
        self.wait_started = -math.inf
        self.kept_pace: frozenset[str] = frozenset()
        self.periods = PeriodTracker()
        self.work_s: float | None = None
        self.await_pending = False
        self.pull_at: float | None = None
        self.mixed: Mapping[str, int] | None = None
        self.next_round: int | None = None
        #: ``wait_before_mix``: until when the mix waits for the rest once the quorum is in (None: not yet)
        self.settle_until: float | None = None
        #: :meth:`_since`'s last answer and what it was built from (it changes once per wait, not per pass)
        self._since_of: tuple[frozenset[str], float] | None = None
        self._since_map: dict[str, float] | None = None

    def begin_wait(
        self,
        now: float,
        last_mix: float,
        work_s: float | None = None,
        mixed: Mapping[str, int] | None = None,
        next_round: int | None = None,
    ) -> None:
        """A wait starts at ``now``; ``work_s``: how long the last round took without its wait; ``mixed``:
        the version of each neighbour we held at the last mix (:func:`is_new`); ``next_round``: the round
        the wait precedes (its mix, ``wait_before_mix``), to tell neighbours ahead of us (:func:`is_ahead`;
        None: none is)."""
        self.deadline = now + self.cfg.max_round_wait_s
        self.last_mix = last_mix
        self.mixed = mixed
        self.next_round = next_round
        self.wait_started = now
        self.work_s = work_s
        self.settle_until = None
        #: before the first mix of ``wait_before_mix``, wait for every learner's first version
        self.await_pending = self.cfg.wait_before_mix and last_mix == -math.inf
        #: ``wait_before_mix``: when to pull the versions still missing (module docstring); None: never
        self.pull_at = now + self.cfg.max_round_wait_s / 2 if self.cfg.wait_before_mix else None

    def pull_due(self, now: float, views: Sequence[NeighbourView]) -> list[str]:
        """The neighbours to ask for a snapshot now (once per wait, halfway through it): subscribed, not
        evicted, not ahead of us (not awaited), and nothing new from them since the last mix."""
        if self.pull_at is None or now < self.pull_at:
            return []
        self.pull_at = None
        ahead = self._ahead(views)
        return [
            v.peer
            for v in views
            if v.subscribed
            and not v.evicted
            and v.peer not in ahead
            and not is_new(v, self.last_mix, self.mixed)
        ]

    def _ahead(self, views: Sequence[NeighbourView]) -> set[str]:
        """The neighbours not evicted that are ahead of us, so not waited for (module docstring)."""
        beyond = self.next_round
        if beyond is not None and self.cfg.wait_before_mix:
            beyond += 1  # a version of the round we are about to mix is in step (module docstring)
        return {v.peer for v in views if not v.evicted and is_ahead(v, beyond, self.last_mix, self.mixed)}

    def _all_quiet(
        self, now: float, awaited: Sequence[NeighbourView], since: Mapping[str, float] | None
    ) -> bool:
        """Whether no awaited neighbour published within ``max_round_wait_s`` (nor is on its way): only
        then does an ahead neighbour start the round early. Judged by the fixed bound, not the adaptive
        ``late_after``: a liar claiming a high round must not cut our wait for honest neighbours that are
        merely slower than their usual pace (without it, it could from ``late_after`` on)."""
        _, active, _ = fresh_neighbours(
            now,
            awaited,
            self.last_mix,
            self.cfg,
            self.cfg.max_round_wait_s,
            await_pending=self.await_pending,
            since=since,
            mixed=self.mixed,
        )
        return active == 0

    def decide(self, now: float, views: Sequence[NeighbourView], *, stopped: bool = False) -> Decision:
        if stopped:
            return Start("stopped")
        self.periods.observe(views)
        late_after = self.periods.late_after(views, self.cfg, self.work_s)
        since = self._since()
        ahead = self._ahead(views)
        awaited = [v for v in views if v.peer not in ahead]
        fresh, active, connected = fresh_neighbours(
            now,
            awaited,
            self.last_mix,
            self.cfg,
            late_after,
            await_pending=self.await_pending,
            since=since,
            mixed=self.mixed,
        )
        if connected and fresh >= max(1, math.ceil(self.cfg.wait_fraction * active)):
            settle = self._settle_until(now, fresh, active)
            if settle is None:
                return self._start("quorum", views)
            return Wait(min(settle, self.deadline))
        if ahead and active == 0 and self._all_quiet(now, awaited, since):
            return self._start("ahead", views)  # nothing to wait for: every publishing neighbour is ahead
        if active == 0 and self.cfg.wait_before_mix:
            reason = self._nothing_to_wait_for(now, awaited, since)
            if reason is not None:
                return self._start(reason, views)
        if now >= self.deadline:
            return self._start("timeout", views)
        until = min(self.deadline, now + self.cfg.recheck_s)
        # wake when the next awaited neighbour turns late: that may be all the quorum was missing
        for v in awaited:
            if v.last_update is not None and not is_new(v, self.last_mix, self.mixed) and not v.evicted:
                late_at = _late_from(v, since) + late_after
                if now < late_at:
                    until = min(until, late_at)
        return Wait(until)

    def _nothing_to_wait_for(
        self, now: float, awaited: Sequence[NeighbourView], since: Mapping[str, float] | None
    ) -> str | None:
        """``wait_before_mix``, no awaited neighbour publishing nor on its way: why the mix may start now
        (module docstring, "Nothing to wait for"), or None to wait on (at most ``max_round_wait_s``)."""
        if self.await_pending and self.next_round == 1:
            return "alone"  # a fresh peer's first mix: the start gate did the waiting for neighbours
        if self.cfg.min_neighbours == 0 and not (learners(awaited) or unsubscribed(now, awaited, self.cfg)):
            return "alone"  # a peer that may learn alone, with no learner connected nor subscribing
        in_step = [
            v for v in awaited if not v.evicted and is_ahead(v, self.next_round, self.last_mix, self.mixed)
        ]
        if not in_step:
            return None
        held = {v.peer for v in in_step}
        rest = [v for v in awaited if v.peer not in held]
        return "in_step" if self._all_quiet(now, rest, since) else None

    def _since(self) -> dict[str, float] | None:
        """From when each neighbour that kept pace counts late: this wait's start (``wait_before_mix``,
        module docstring "Keeping pace"; None: off). Built once per wait and reused by its passes."""
        if not self.cfg.wait_before_mix:
            return None
        of = (self.kept_pace, self.wait_started)
        if self._since_map is None or self._since_of != of:
            self._since_of = of
            self._since_map = dict.fromkeys(self.kept_pace, self.wait_started)
        return self._since_map

    def _settle_until(self, now: float, fresh: int, active: int) -> float | None:
        """With the quorum in: until when the mix still waits for the publishing rest (``wait_before_mix``;
        None: start now). The first wait with the quorum sets the bound; every publishing neighbour fresh
        ends it early."""
        if not self.cfg.wait_before_mix or fresh >= active or not self.work_s or self.work_s <= 0:
            return None
        if self.settle_until is None:
            self.settle_until = now + self.cfg.settle_factor * self.work_s
        return self.settle_until if now < self.settle_until else None

    def _start(self, reason: str, views: Sequence[NeighbourView]) -> Start:
        """The wait ends: remember who kept pace (fresh since the last mix) for the next one."""
        self.kept_pace = frozenset(v.peer for v in views if is_new(v, self.last_mix, self.mixed))
        return Start(reason)


def next_round_at(started: float, cfg: PacingConfig) -> float:
    """Rounds start at least ``round_interval_s`` apart (start to start)."""
    return started + cfg.round_interval_s
