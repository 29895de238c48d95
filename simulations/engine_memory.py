"""The memory engine: every peer in one trio loop over :class:`p2pfl.transport.memory.MemoryNetwork` (see
:mod:`p2pfl.sim.runner`).

For runs of thousands of peers (``benchmarks/bench_scale.py``; profiled with cProfile at 1,000 peers,
docs/benchmarks.md "Scale"):

* **Blocking work runs inline from** :data:`INLINE_FROM` **peers on.** A peer hands its training, evaluations
  and disk writes to a worker thread so that its network keeps being served; here every peer shares one
  interpreter and one GIL, so the ~14 thread hand-offs per peer-round bought no parallelism for models this
  small and cost more than the work. The peers' protocol is unchanged: the same calls, in the same order, on
  the loop's thread. Runs of fewer peers keep the peer's default (worker threads): they gain little, and
  their scenarios' timings (Sybils joining and leaving at honest rounds, slow and flooding attackers) were
  measured with it. On a mock clock the work runs inline at any size, taking a fixed simulated time: a
  thread's real time is invisible to the mock clock, which jumps on while the loop waits for it
  (``p2pfl.sim.determinism``).
* **The cyclic garbage collector is kept off the live objects** (:class:`Collector`). Thousands of peers
  are millions of long-lived objects (models, replicas, scores, traces); with the default thresholds the
  collector swept them all again and again (at 1,000 peers x 3 rounds: 9 full collections, 1.8 of 19.6 CPU
  seconds, and a sweep's cost grows with the heap). The collector is off while the peers are created and
  wired; then every live object is moved out of its reach (``gc.freeze``), the young generation is
  collected every :data:`GC_YOUNG` allocations instead of 700, and what survives a young collection is
  frozen too: a peer's per-round objects (scores, contributions, trace rows, suspended coroutines) live for
  a round, which at 10,000 peers is a minute of wall clock, and used to be swept again by the older
  generations' collections, whose size grows with the number of peers (at 3,000 peers x 3 rounds: 5.3 s
  in collections, 2.5 s of it while the peers were created). Reference counting frees everything as
  before; only garbage in reference cycles that outlived a young collection (a peer that leaves under
  churn) waits until the run ends (``gc.unfreeze``); the young collections still find the cycles that die
  young (trio's cancellations). Nothing the peers compute depends on when collections run.
* **One BLAS thread.** numpy's OpenBLAS splits even a 20,000 x 20 by 20 x 5 product over both cores; with
  thousands of such products from one loop (and other processes on the machine) it measured 5-13 ms per
  product against 0.7 ms on one thread.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import trio
from threadpoolctl import threadpool_limits

from .data import Split
from .determinism import mock_clock_running, run_simulated, wall_limit
from .evidence_sim import EvidenceHub
from .plan import load_splits, make_plan
from .progress import Progress
from .runner import VECTOR_SAMPLE, PeerRunner, RunOutput
from .scenario import Scenario
from .secagg_sim import SecAggHub

T = TypeVar("T")
#: from this many peers on, their blocking work runs inline (module docstring)
INLINE_FROM = 64
#: allocations between young-generation collections during a memory-engine run (CPython's default: 700)
GC_YOUNG = 200_000


class Collector:
    """The cyclic collector during a run (module docstring): off while the peers are set up
    (:meth:`__enter__`), then, from :meth:`rounds_start` on, young collections every :data:`GC_YOUNG`
    allocations whose survivors are frozen; on exit everything is as it was, nothing left frozen."""

    def __enter__(self) -> Collector:
        self._thresholds = gc.get_threshold()
        self._enabled = gc.isenabled()
        gc.disable()
        return self

    def rounds_start(self) -> None:
        """The peers are created and wired: collect their set-up's garbage once, freeze what lives."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG, *self._thresholds[1:])
        gc.callbacks.append(self._freeze_survivors)
        if self._enabled:
            gc.enable()

    @staticmethod
    def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            gc.freeze()  # what outlived this collection is not swept again

    def __exit__(self, *exc: object) -> None:
        if self._freeze_survivors in gc.callbacks:
            gc.callbacks.remove(self._freeze_survivors)
        gc.unfreeze()
        gc.set_threshold(*self._thresholds)
        if self._enabled:
            gc.enable()


async def run_inline(fn: Callable[..., T], *args: Any) -> T:
    """The peers' ``run_sync`` here: call ``fn`` on the loop's thread, then let the other tasks run (a
    checkpoint, as ``trio.to_thread.run_sync`` is)."""
    result = fn(*args)
    await trio.lowlevel.checkpoint()
    return result


async def run_memory(
    scenario: Scenario, out: Path, *, quiet: bool = False, splits: list[Split] | None = None
) -> RunOutput:
    """``splits``: each peer's data, instead of the scenario's ``[data]`` (benchmarks/bench_network.py)."""
    with Collector() as collector, threadpool_limits(limits=1, user_api="blas"):
        return await _run_memory(scenario, out, quiet=quiet, splits=splits, collector=collector)


async def _run_memory(
    scenario: Scenario, out: Path, *, quiet: bool, splits: list[Split] | None, collector: Collector
) -> RunOutput:
    from p2pfl.transport.memory import MemoryNetwork

    plan = make_plan(scenario)
    splits = load_splits(scenario) if splits is None else splits
    net = MemoryNetwork(flood=scenario.run.relay)
    nid = scenario.run.network_id
    hub = SecAggHub(scenario.secagg, plan.peer_ids, nid) if scenario.secagg.enabled else None
    evidence = (
        EvidenceHub(
            scenario.evidence,
            plan.peer_ids,
            [set(p.neighbours) for p in plan.peers],
            {p.index for p in plan.peers if p.honest},
        )
        if scenario.evidence.enabled
        else None
    )
    t0 = time.time()
    honest = plan.honest
    sample = set(honest[:VECTOR_SAMPLE])
    inline = run_inline if len(plan.peers) >= INLINE_FROM else None
    run_sync = run_simulated if mock_clock_running() else inline
    runners = [
        PeerRunner(
            plan=plan,
            me=p,
            split=splits[p.index],
            transport=lambda ident: net.open(network_id=nid, seed=ident.seed),
            addr_of=lambda j: f"memory/{plan.peer_ids[j]}",
            state_dir=(out / "peers" / str(p.index)) if scenario.churn.enabled else None,
            t0=t0,
            keep_vectors=p.index in sample,
            listen="memory",
            honest_round=lambda: min((runners[i].rounds_done for i in honest), default=0),
            secagg=hub,
            evidence=evidence,
            run_sync=run_sync,
        )
        for p in plan.peers
    ]
    go = trio.Event()
    done_event = trio.Event()
    finished: set[int] = set()

    def on_finished(r: PeerRunner) -> None:
        if r.me.honest:
            finished.add(r.me.index)
            if len(finished) == len(honest):
                done_event.set()

    progress = Progress(len(honest) * scenario.run.rounds, quiet, steps=scenario.run.rounds)
    timed_out = False
    async with trio.open_nursery() as nursery:
        for r in runners:
            await nursery.start(r.run, go.wait, done_event.is_set, on_finished)
        # wire the topology once everybody is online (each edge dialled once, by its lower end)
        for r in runners:
            if r.me.join_round > 0:
                continue  # a late Sybil dials its neighbours when it joins
            assert r.peer is not None
            for j in r.me.neighbours:
                if j > r.me.index and plan.peers[j].join_round == 0:
                    await r.peer.connect(f"memory/{plan.peer_ids[j]}")
        collector.rounds_start()  # the peers, their data and models live for the run: out of its sweeps
        go.set()
        with (
            trio.move_on_after(scenario.run.time_limit_s) as limit,
            wall_limit(limit, scenario.run.time_limit_s),
        ):
            while not done_event.is_set():
                if quiet:  # nothing to draw: no sum over every runner twice a second
                    await done_event.wait()
                    break
                progress.update(sum(min(r.rounds_done, scenario.run.rounds) for r in runners if r.me.honest))
                with trio.move_on_after(0.5):
                    await done_event.wait()
        progress.update(sum(min(r.rounds_done, scenario.run.rounds) for r in runners if r.me.honest))
        if hub is not None:
            hub.close()  # members waiting for fellows that already stopped leave their group round
        if limit.cancelled_caught:
            timed_out = True
            done_event.set()
            with trio.move_on_after(30):
                while any(r.peer is not None for r in runners):
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    progress.close()
    wall = time.time() - t0
    results = []
    for r in runners:
        res = r.result()
        res["final_accuracy"] = r.trace[-1]["acc"] if r.trace else None
        results.append(res)
    vectors = {r.me.index: np.stack(r.vectors) for r in runners if r.vectors}
    return RunOutput(plan, results, vectors, wall, timed_out, hub.summary() if hub is not None else None)
