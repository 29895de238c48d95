"""Reproducible memory-engine runs: a scenario run twice with the same ``[run] seed`` on a mock clock gives
the same results, bit for bit: every trace row, counter, eviction and model vector, all but the wall-clock
figures (a trace row's ``t``, a flood's reported ``t``, the run's ``wall_s``). :func:`run_reproducible` is
the entry point (``p2pfl sim SCENARIO --reproducible``). Measured: each memory scenario in
``simulations/scenarios/`` (5 rounds each; flood and the libp2p ones moved to memory) gave one result twice
in a process and under two hash seeds.

What a run's order depended on, and how each is pinned:

* **Worker threads.** Below :data:`~p2pfl.sim.engine_memory.INLINE_FROM` peers a peer hands its training and
  evaluations to a worker thread, as does a flooding attacker its burst. A thread runs in real time, which a
  mock clock does not see: an autojumping clock moves on whenever the loop waits for it, by as much as the
  machine's load lets pass (at 0.5 s per training call an 8-peer run timed out at 0 rounds). On a mock
  clock (:func:`mock_clock_running`) that work runs inline, and each call of a peer takes :data:`WORK_S` of
  simulated time (:func:`run_simulated`): rounds take time, so what runs on timers (a flood's start round, a
  replay's interval, churn's ticks, a Sybil's join) meets the rounds where the scenario puts it, not all
  at t = 0.
* **trio's scheduler.** Each scheduling batch runs in a random order (reversed or not, from the module-level
  ``random.Random`` in ``trio._core._run``, unseeded), and the batch itself comes in an order set by object
  addresses: ``trio.Event.set`` wakes its waiters from a set of tasks, and cancel scopes that expire at the
  same instant fire in ``id()`` order. A mock clock makes such ties common (every peer waits from the same
  instant), and addresses differ from run to run, also within one process (measured: an 8-peer scenario
  diverged at the engine's start signal). :func:`seeded_scheduler` turns on the order trio keeps for
  Hypothesis (each batch sorted by task creation, then shuffled by that random) and seeds the random from
  the scenario's seed, for the run; both are restored afterwards. This is trio's private state, checked at
  run time: a trio without it raises :class:`p2pfl.errors.StateError` rather than run unordered.
* **The hash seed.** The memory transport kept its neighbours in a set of peer-id strings and delivered each
  broadcast in that set's order, which ``PYTHONHASHSEED`` changes: two hash seeds gave two runs. It keeps
  them in connection order now. The protocol's other sets were not audited one by one; the scenario files
  gave the same result under two hash seeds.
* **The clock.** Pacing, staleness, rate limits and status intervals read trio's clock, which the mock clock
  drives. Wall-clock reads that decide nothing stay wall-clock: the figures above, the ``timestamp_ms`` of
  signed headers and version records (digests differ between runs) and request latencies for metrics. One
  decision reads the timestamp: the freshness window of a gossiped delta (``p2pfl.protocol.freshness``),
  against the receiver's wall clock. Both ends are real time and a delivery takes milliseconds of it, the
  window minutes, so it refuses nothing an honest run sends and decides alike in every run.
* **Randomness.** Data, topology, identities, initial models, local training, attacks and churn are seeded
  from ``[run] seed``. Not seeded, on purpose: differential privacy's noise (``p2pfl.privacy.dpsgd.
  fresh_rng``: noise an observer could predict protects nothing), so a ``[privacy]`` scenario reproduces its
  schedule but not its models; secure aggregation's masks and keys (``os.urandom``), which cancel in the
  group's mean, so a ``[secagg]`` scenario reproduces (measured).
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import trio

from p2pfl.errors import StateError

from .runner import RunOutput
from .scenario import Scenario

T = TypeVar("T")


def mock_clock_running() -> bool:
    """Whether the running trio loop is driven by a :class:`trio.testing.MockClock`. ``trio.testing`` is
    imported only where a MockClock is made (it imports pytest: ~0.07 s of CPU in every process that loads
    the simulation, the libp2p engine's fork server included, where it delayed every worker's start); a
    process that never imported it runs no MockClock."""
    testing = sys.modules.get("trio.testing")
    return testing is not None and isinstance(trio.lowlevel.current_clock(), testing.MockClock)


#: simulated seconds each blocking call of a peer (training, an evaluation, a disk write) takes on a mock
#: clock: about a small model's (measured: a logistic regression's round is ~10 such calls of ~1-5 ms)
WORK_S = 0.005


async def run_simulated(fn: Callable[..., T], *args: Any) -> T:
    """The peers' ``run_sync`` on a mock clock: ``fn(*args)`` on the loop's thread, then :data:`WORK_S` of
    simulated time (each peer's, concurrently with the others')."""
    result = fn(*args)
    await trio.sleep(WORK_S)
    return result


@contextmanager
def wall_limit(scope: trio.CancelScope, seconds: float) -> Iterator[None]:
    """On a mock clock, also cancel ``scope`` (the run's ``[run] time_limit_s`` scope, in simulated seconds)
    once ``seconds`` of wall time have passed in the block: a simulated-clock run ends in bounded wall time,
    with the same time-limit error. Simulated time moves only when every task waits, by :data:`WORK_S` per
    blocking call: finished peers that keep running rounds (``[run] after_rounds = "mix"``) while a paused
    peer never completes advanced it ~0.05 s per round, so an 1800 s limit took hours of wall time. On a
    real clock the scope's own deadline is that bound already: nothing to do. Where a run cut by wall time
    stops depends on the machine: a timed-out run (an error) is not reproducible."""
    if not mock_clock_running():
        yield
        return
    token = trio.lowlevel.current_trio_token()

    def fire() -> None:
        with suppress(trio.RunFinishedError):  # the run ended as the timer fired
            token.run_sync_soon(scope.cancel)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


#: trio's switch for the order it keeps for Hypothesis (batches sorted by task creation, then shuffled)
_ORDERED = "_ALLOW_DETERMINISTIC_SCHEDULING"


def _scheduler() -> tuple[ModuleType, random.Random]:
    from trio._core import _run

    r = getattr(_run, "_r", None)
    if not isinstance(r, random.Random) or not isinstance(getattr(_run, _ORDERED, None), bool):
        raise StateError(f"trio {trio.__version__} has no scheduler random or ordering switch to seed")
    return _run, r


@contextmanager
def seeded_scheduler(seed: int) -> Iterator[None]:
    """Order and seed trio's scheduling for the block (module docstring); its previous state comes back
    after. Not for concurrent trio runs in other threads: the state is the process's."""
    run, r = _scheduler()
    state, ordered = r.getstate(), getattr(run, _ORDERED)
    r.seed(seed)
    setattr(run, _ORDERED, True)
    try:
        yield
    finally:
        setattr(run, _ORDERED, ordered)
        r.setstate(state)


def run_reproducible(scenario: Scenario, out: Path, *, quiet: bool = True) -> RunOutput:
    """Run ``scenario`` on the memory engine, on an autojumping mock clock with the scheduler seeded from
    ``[run] seed``: the same scenario under the same ``PYTHONHASHSEED`` gives the same :class:`RunOutput`
    (but ``wall_s`` and the traces' ``t``). Its ``time_limit_s`` is simulated time, and wall time as well
    (:func:`wall_limit`): whichever comes first ends the run as timed out."""
    import trio.testing

    from .engine_memory import run_memory

    with seeded_scheduler(scenario.run.seed):
        clock = trio.testing.MockClock(autojump_threshold=0)
        return trio.run(partial(run_memory, scenario, out, quiet=quiet), clock=clock)
