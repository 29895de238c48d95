"""The driver of one simulated peer: :class:`PeerRunner` (split from :mod:`p2pfl.sim.runner`, which runs a
whole scenario and re-exports it).

It starts the real :class:`p2pfl.peer.Peer`, waits for the start signal (a start gate, not a round barrier:
peers pace themselves with ``wait_fraction``), runs one peer-local round at a time recording a trace (test
accuracy, bytes, reputations it gives its neighbours, evictions), leaves and rejoins under churn (resuming
from its checkpoint), and keeps serving its neighbours after its last round until every honest peer is
done. Both engines use it: the memory engine runs many in one trio loop, the libp2p worker one per process.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import trio

from p2pfl.identity import Identity
from p2pfl.learner import Dataset, Learner
from p2pfl.peer import Peer, RunSync
from p2pfl.peer_rotation import address_candidates
from p2pfl.privacy.config import PrivacyConfig

from . import sybils
from .after_rounds import SERVE_POLL_S, AfterRounds
from .attacks import Behaviour, make_behaviour
from .data import Split
from .evidence_sim import EvidenceHub
from .observe import RoundObserver
from .plan import (
    PeerPlan,
    Plan,
    build_learner,
    flat,
    peer_config,
)
from .privacy_report import privacy_row
from .secagg_sim import SecAggHub, cap_outsider, member_config, member_status

#: At most this many honest peers keep their model vector per round (for the consensus-distance plot).
VECTOR_SAMPLE = 64
#: The libp2p worker copies its checkpoint here when it completes its rounds (the model the report scores).
FINAL_CHECKPOINT = "final.p2ck"


@dataclass
class PeerRunner:
    """Drives one peer through a scenario (used in-process by the memory engine and by each worker)."""

    plan: Plan
    me: PeerPlan
    split: Split
    transport: Callable[[Identity], Any]
    addr_of: Callable[[int], str]
    state_dir: Path | None
    t0: float
    keep_vectors: bool = True
    listen: str = "/ip4/127.0.0.1/tcp/0"
    status_interval_s: float = 0.0
    #: the fewest rounds any honest peer has done (when Sybils join and leave); None: no Sybils
    honest_round: Callable[[], int] | None = None
    #: the secure-aggregation hub of the scenario's [secagg] group (memory engine only)
    secagg: SecAggHub | None = None
    #: issue 16: the [evidence] hub (memory engine only; p2pfl.sim.evidence_sim)
    evidence: EvidenceHub | None = None
    #: how the peer runs its blocking work (None: worker threads, the peer's default; the memory engine runs
    #: it inline, see p2pfl.sim.engine_memory)
    run_sync: RunSync | None = None
    peer: Peer | None = None
    behaviour: Behaviour | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    vectors: list[npt.NDArray[np.float32]] = field(default_factory=list)
    rounds_done: int = 0
    restarts: int = 0
    finished: bool = False
    #: an honest peer counted finished short of its rounds: paused with no peer connected (:meth:`_stalled`)
    stalled: bool = False
    final: dict[str, Any] | None = None
    _bytes: list[int] = field(default_factory=lambda: [0, 0])
    #: every byte on the connections, sent and received (libp2p; 0 in memory), and the application bytes by
    #: what carried them (gossip or a request protocol), over the peer's incarnations
    _wire: list[int] = field(default_factory=lambda: [0, 0])
    _by: dict[str, Counter[str]] = field(default_factory=lambda: {"sent": Counter(), "received": Counter()})
    _served: int = 0
    _rejected: Counter[str] = field(default_factory=Counter)
    _evicted: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        sc = self.plan.scenario
        self.rng = random.Random(sc.run.seed * 7919 + self.me.index)
        learner: Learner = build_learner(sc, self.split, self.me.index)
        if not self.me.honest:
            spec = sybils.sybil_attack(sc) if self.me.index >= sc.topology.peers else sc.attack
            self.behaviour = make_behaviour(
                spec,
                seed=sc.run.seed * 31 + self.me.index,
                perm_seed=sc.run.seed * 7 + 1,
                colluders=frozenset(self.plan.peer_ids[p.index] for p in self.plan.peers if not p.honest),
            )
            learner = self.behaviour.wrap_learner(learner)
            if self.behaviour.protocol is not None:
                self.behaviour.protocol.t0 = self.t0
            self.transport = self.behaviour.wrap_transport(self.transport)
        self.learner = learner
        self._test: Dataset = self.split.test
        self.crashes = {c.round: c.downtime_s for c in sc.churn.crashes if c.peer == self.me.index}
        self.observe = RoundObserver(self.plan, self.me)

    # ----------------------------------------------------------------------------- lifecycle

    def _new_peer(self) -> Peer:
        sc = self.plan.scenario
        # over libp2p the topology's links are static peers (re-dialled when lost), except with link
        # rotation: a static link is pinned at the end that dials it only, the other end's rotation closes
        # it and its rest refuses the re-dials (measured: 274 refusals and 4 points of accuracy in a 12-peer
        # run); rotating peers dial their topology links once at start (connect_neighbours), as in memory
        static = (
            tuple(self.addr_of(j) for j in self.me.neighbours if self._dials(j))
            if self.listen.startswith("/ip4") and not sc.run.rotate_every
            else ()
        )
        cfg = peer_config(
            sc,
            state_dir=self.state_dir,
            listen=self.listen,
            static_peers=static,
            status_interval_s=self.status_interval_s,
        )
        if cfg.rotate_every and not cfg.rotate_degree:
            # rotation keeps the topology's degree of this peer, not discovery's max_neighbours
            cfg = dataclasses.replace(cfg, rotate_degree=max(1, len(self.me.neighbours)))
        if self.me.join_round > 0:
            cfg = dataclasses.replace(cfg, join_on_start=True)  # a fresh identity joins from snapshots
        if not self.me.honest:  # DP is the honest peers' promise; an attacker's wrapped learner has no DP-SGD
            cfg = dataclasses.replace(cfg, privacy=PrivacyConfig())
        if self.behaviour is not None and self.behaviour.spec.redial != "off":
            cfg = dataclasses.replace(cfg, rotate_every=0)  # a re-dialling attacker keeps every link it gets
        if sc.sybil.closed and self.me.honest:
            cfg = dataclasses.replace(cfg, allow=frozenset(self.plan.peer_ids[: sc.topology.peers]))
        if self.secagg is None and sc.secagg.enabled:  # libp2p engine: the peer joins over /p2pfl/secagg/1
            group = member_config(sc.secagg, self.plan.peer_ids, self.me.index)
            cfg = cfg if group is None else dataclasses.replace(cfg, secagg=group)
        peer = Peer(cfg, self.learner, self.me.identity, transport=self.transport, run_sync=self.run_sync)
        if self.secagg is not None:
            self.secagg.bind(peer)
        elif sc.secagg.enabled:
            cap_outsider(
                peer, [self.plan.peer_ids[i] for i in sc.secagg.members], sc.secagg.outsider_share_cap
            )
        # every other peer of the plan: the simulation's registry (rotation) and a re-dialler's targets (only
        # when needed: at 1,000 peers it is a million entries for nothing)
        others: dict[str, str] = {}
        if peer.rotation is not None or self.behaviour is not None:
            others = {pid: self.addr_of(j) for j, pid in enumerate(self.plan.peer_ids) if j != self.me.index}
        if peer.rotation is not None:
            peer.rotation.candidates = address_candidates(peer.connect, others)
        peer.choose(self.plan.peer_ids[j] for j in self.me.neighbours)  # the topology's links, either end
        if self.behaviour is not None:
            self.behaviour.bind(peer)
            self.behaviour.addrs = others
        self.observe.bind(peer)
        if self.evidence is not None:
            self.evidence.bind(peer, self.me.index, self.learner)
        return peer

    def _dials(self, j: int) -> bool:
        """Whether this peer dials its neighbour ``j``. Over libp2p each link is dialled by its lower-indexed
        end only: py-libp2p 0.8.1 keeps both connections of a simultaneous dial (max_connections_per_peer is
        not enforced inbound), and streams opened on the extra one were measured to stall (multiselect
        timeouts) on 2-core 32-peer runs. In memory links are dialled from both ends. A link to a Sybil that
        joins later is dialled by the later one (it alone knows when it is up)."""
        if not self.listen.startswith("/ip4"):
            return True
        mine, theirs = self.me.join_round, self.plan.peers[j].join_round
        return mine > theirs if mine != theirs else j > self.me.index

    async def connect_neighbours(self, peer: Peer, timeout: float = 0.0) -> None:
        """Dial the topology neighbours with a higher index, wait for the others to dial us (retrying for up
        to ``timeout`` s for those not up yet). On the memory transport links are dialled from both ends."""
        deadline = trio.current_time() + timeout
        # a Sybil that joins later than us is not waited for: it dials us (or we redial it) when it comes
        missing = {j for j in self.me.neighbours if self.plan.peers[j].join_round <= self.me.join_round}

        async def dial(j: int) -> None:
            try:
                await peer.connect(self.addr_of(j))
                missing.discard(j)
            except Exception:  # not up yet, gone, or evicted us: retried or ignored
                pass

        for _attempt in range(1000):
            connected = set(peer.transport.connected_peers())
            missing -= {j for j in missing if self.plan.peer_ids[j] in connected}
            async with trio.open_nursery() as nursery:  # in parallel: each dial is a few round trips
                for j in sorted(missing):
                    if self._dials(j):
                        nursery.start_soon(dial, j)
            if not missing or trio.current_time() >= deadline:
                return
            await trio.sleep(0.2)

    def _absorb(self, peer: Peer) -> None:
        """Keep counters of a peer incarnation that is about to go away (churn)."""
        stats = peer.transport.stats
        self._bytes[0] += stats.bytes_sent
        self._bytes[1] += stats.bytes_received
        self._wire[0] += stats.wire_sent
        self._wire[1] += stats.wire_received
        self._by["sent"].update(stats.sent_by)
        self._by["received"].update(stats.received_by)
        self._served += stats.requests_served
        self._rejected.update(peer.engine.rejections)
        for reason, count in stats.dropped.items():
            self._rejected[f"transport:{reason}"] += count
        if peer.engine.scorer is not None:
            self._evicted |= peer.engine.scorer.evicted()

    def snapshot_counters(self) -> dict[str, Any]:
        peer = self.peer
        sent, received = self._bytes
        wire_sent, wire_received = self._wire
        served = self._served
        rejected = Counter(self._rejected)
        evicted = set(self._evicted)
        by_part: dict[str, int] = {}  # gossip RPC bytes by part (libp2p), of the current incarnation
        by = {k: Counter(v) for k, v in self._by.items()}
        if peer is not None and peer._transport is not None:
            stats = peer.transport.stats
            by_part = dict(stats.gossip_sent_by)
            sent += stats.bytes_sent
            received += stats.bytes_received
            wire_sent += stats.wire_sent
            wire_received += stats.wire_received
            by["sent"].update(stats.sent_by)
            by["received"].update(stats.received_by)
            served += stats.requests_served
            for reason, count in stats.dropped.items():
                rejected[f"transport:{reason}"] += count
        if peer is not None:
            rejected.update(peer.engine.rejections)
            if peer.engine.scorer is not None:
                evicted |= peer.engine.scorer.evicted()
        return {
            "bytes_sent": sent,
            "bytes_received": received,
            # every byte on the connections (libp2p: handshakes, framing, gossip control); 0 in memory
            "wire_sent": wire_sent,
            "wire_received": wire_received,
            "gossip_sent_by": by_part,
            "sent_by": dict(by["sent"]),
            "received_by": dict(by["received"]),
            "requests_served": served,
            "rejected": dict(sorted(rejected.items())),
            "evicted": sorted(evicted),
            # extra mixing steps per round run / skipped (p2pfl.protocol.mixing), of the current incarnation
            "mix_steps": [peer.rounds.mix_steps_run, peer.rounds.mix_steps_skipped]
            if peer is not None
            else [0, 0],
            # link rotation (p2pfl.peer_rotation) of the current incarnation; None: off
            "rotation": peer.rotation.status() if peer is not None and peer.rotation is not None else None,
        }

    def _record(self, peer: Peer, evicted_now: list[str], round_s: float = 0.0) -> None:
        params = peer.params()
        accuracy_on = getattr(self.learner, "accuracy_on", None)  # the accuracy alone, where the learner can
        if accuracy_on is not None:
            acc = accuracy_on(self._test, params)
        else:
            acc = self.learner.evaluate_on(self._test, params).accuracy  # type: ignore[attr-defined]
        counters = self.snapshot_counters()
        reps: dict[str, float] = {}
        if peer.engine.scorer is not None:
            for j in self.me.neighbours:
                pid = self.plan.peer_ids[j]
                reps[pid] = round(peer.engine.scorer.reputation(pid), 4)
        self.trace.append(
            {
                "round": peer.round,
                "t": round(time.time() - self.t0, 3),
                "round_s": round(round_s, 4),  # the round without the wait before it
                "acc": acc,
                "bytes_sent": counters["bytes_sent"],
                "bytes_received": counters["bytes_received"],
                "evicted": evicted_now,
                "rep": reps,
                **peer.rollout.trace_row(),  # rollout slice: ΔAUC/ΔF1, serving version, promotions
                **self.observe.row(peer),
                **privacy_row(peer),  # epsilon spent (DP on)
            }
        )
        if self.keep_vectors:
            self.vectors.append(flat(params))

    async def run(
        self,
        go: Callable[[], Any],
        all_done: Callable[[], bool],
        on_finished: Callable[[PeerRunner], None],
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Enter the peer, report started, ``await go()``, run rounds until ``all_done()``.

        ``on_finished`` is called once the peer completed ``[run] rounds`` rounds; what the results report
        (trace, counters, model) is frozen at that point, while the peer keeps running so that slower peers
        still mix with it instead of waiting ``max_round_wait_s`` for a silent neighbour."""
        sc = self.plan.scenario
        target = sc.run.rounds
        crash_at = self.behaviour.crash_round if self.behaviour is not None else None
        after = AfterRounds(sc.run.after_rounds, target)  # once finished (p2pfl.sim.after_rounds)
        started = False
        if self.me.join_round > 0:
            started = True
            task_status.started()
            await go()
            if not await self._until_honest_round(self.me.join_round, all_done):
                return
        while True:
            peer = self._new_peer()
            async with peer:
                self.peer = peer
                if not started:
                    started = True
                    task_status.started()
                    await go()
                    await self.connect_neighbours(peer, timeout=15.0)
                else:
                    await self.connect_neighbours(peer, timeout=2.0)
                leave_for: float | None = None
                async with trio.open_nursery() as nursery:
                    if self.behaviour is not None:
                        nursery.start_soon(self.behaviour.run, peer)
                    while not all_done():
                        if crash_at is not None and peer.round >= crash_at:
                            break  # a crash attacker: gone for good
                        if self._leaving():
                            break  # a Sybil's time is up: gone for good
                        if (
                            not self.me.honest or peer.round >= target
                        ) and not peer.transport.connected_peers():
                            await trio.sleep(0.5)  # isolated (e.g. an evicted attacker): idle, leave the CPU
                            continue
                        if self._stalled(target):
                            if not self.finished:  # it can never finish its rounds: its results stand now
                                self.finished = self.stalled = True
                                self.final = self.result()
                                on_finished(self)
                            await trio.sleep(0.5)
                            continue
                        if self.me.honest and not after.runs_round(
                            peer.round, peer.engine.replicas, peer.engine.is_evicted
                        ):
                            await self._serve_a_while(peer)  # finished: [run] after_rounds (respond, serve)
                            continue
                        if self.behaviour is not None:
                            await self.behaviour.before_round(peer)
                        # (a solo pause ends with the run, or when the peer stalls in it)
                        reports = await peer.run(1, until=lambda: all_done() or self._stalled(target))
                        if not reports:
                            break
                        if peer.round > target:
                            continue  # done: keeps learning and publishing so slower peers never wait for it
                        self.rounds_done = peer.round
                        self._record(peer, reports[-1].evicted, reports[-1].duration_s)
                        if peer.round == target and not self.finished:
                            self.finished = True
                            self.final = self.result()
                            on_finished(self)
                        if self.me.honest and peer.round < target:
                            if peer.round in self.crashes:
                                leave_for = self.crashes[peer.round]
                                break
                            if sc.churn.leave > 0 and self.rng.random() < sc.churn.leave:
                                leave_for = -1.0  # rejoin at random
                                break
                    nursery.cancel_scope.cancel()
                self._absorb(peer)
                self.peer = None
            if leave_for is None:
                return
            self.restarts += 1
            if leave_for >= 0:
                await trio.sleep(leave_for)
            else:
                for _ in range(10_000):
                    await trio.sleep(sc.churn.tick_s)
                    if all_done() or self.rng.random() < sc.churn.rejoin:
                        break

    def _stalled(self, target: int) -> bool:
        """An honest peer that can never finish its rounds: paused after ``solo_rounds`` solo rounds with no
        peer connected (its neighbours all evicted; a simulation dials its neighbours only when it starts or
        rejoins). Without it a run waited for this peer until ``time_limit_s`` while finished peers, and
        attackers left connected only to each other, kept running rounds (tests/simulations/test_engines.py's
        ring of crash attackers; such a peer held a mnist5k matrix cell in session 28)."""
        peer = self.peer
        return (
            peer is not None
            and self.me.honest
            and peer.round < target
            and peer.rounds.solo.tracker.paused
            and not peer.transport.connected_peers()
        )

    async def _serve_a_while(self, peer: Peer) -> None:
        """A finished peer between rounds (p2pfl.sim.after_rounds): readmit expired evictions and forget idle
        identities, as ``p2pfl peer``'s serve loop does (p2pfl.peer_serve), then sleep."""
        now = trio.current_time()
        await peer.exchange.execute(peer.engine.readmissions(now))
        peer.engine.forget_idle(now)
        await trio.sleep(SERVE_POLL_S)

    def _leaving(self) -> bool:
        leave = self.me.leave_round
        return bool(leave) and self.honest_round is not None and self.honest_round() >= leave

    async def _until_honest_round(self, rounds: int, all_done: Callable[[], bool]) -> bool:
        """Wait until every honest peer has done ``rounds`` rounds (False: the run ended first)."""
        clock = self.honest_round or (lambda: rounds)
        for _ in range(10_000_000):
            if all_done():
                return False
            if clock() >= rounds:
                return True
            await trio.sleep(0.02)  # a small model's round takes a few ms: join at the round, not later
        return False

    def result(self) -> dict[str, Any]:
        """This peer's results, as frozen when it finished its rounds (or now, if it did not). An attacker's
        actions count over the whole run: a burst can outlast its rounds (the memory engine's peers, working
        inline, finish 12 rounds before a 300-envelope flood is out)."""
        if self.final is not None:
            if self.behaviour is None:
                return self.final
            attack = {"bad_envelopes_sent": self.behaviour.envelopes_sent, "attack": self.behaviour.report()}
            return {**self.final, **attack}
        counters = self.snapshot_counters()
        return {
            "index": self.me.index,
            "id": self.plan.peer_ids[self.me.index],
            "honest": self.me.honest,
            "kind": self.me.kind,
            "neighbours": list(self.me.neighbours),
            "rounds": self.rounds_done,
            **({"stalled": True} if self.stalled else {}),
            "restarts": self.restarts,
            "bad_envelopes_sent": self.behaviour.envelopes_sent if self.behaviour else 0,
            **({"attack": self.behaviour.report()} if self.behaviour else {}),
            "join_round": self.me.join_round,
            "leave_round": self.me.leave_round,
            **counters,
            **({"secagg": g} if self.peer is not None and (g := member_status(self.peer)) else {}),
            "trace": self.trace,
        }
