"""Reproducible memory-engine runs: a scenario run twice with the same ``[run] seed`` on a mock clock gives
the same results, bit for bit (every trace row but its wall-clock ``t``, every counter, every model vector).

What a run's order depends on, and how each is pinned here:

* **Worker threads.** Below :data:`~p2pfl.sim.engine_memory.INLINE_FROM` peers a peer hands its training and
  evaluations to a worker thread. A thread runs in real time, which a mock clock does not see: an autojumping
  clock moves on whenever the loop waits for it, by as much as the machine's load lets pass. On a mock clock
  the engine therefore runs every peer's blocking work inline (:func:`mock_clock_running`), and the work takes
  no simulated time.
* **trio's scheduler.** Each scheduling batch runs in a random order (reversed or not, from the module-level
  ``random.Random`` in ``trio._core._run``, unseeded). :func:`seeded_scheduler` seeds it from the scenario's
  seed for the run and restores its state afterwards. It is trio's private state (checked at run time: a trio
  without it raises :class:`p2pfl.errors.StateError` here rather than run unseeded). Cancel scopes that expire
  at the same instant fire in the order of their ids (``id()``, an address); the measured runs were
  reproducible with it, because the same run allocates the same way.
* **Set iteration order of strings** changes with ``PYTHONHASHSEED``. The memory transport kept its
  neighbours in a set of peer-id strings and delivered each broadcast in that order: two hash seeds gave two
  different runs. It keeps them in connection order now, and runs under different hash seeds were the same
  (measured at 8, 16 and 48 peers, hash seeds 0-6). The protocol's other sets were not audited one by one:
  what is promised is a run reproduced under the same hash seed.
* **The clock.** Pacing, staleness, rate limits and status intervals read trio's clock, so the mock clock
  drives them. Wall-clock reads that decide nothing stay wall-clock: the trace's ``t`` and the run's
  ``wall_s``, the ``timestamp_ms`` of signed headers and version records (so digests differ between runs;
  no decision reads the timestamp), and request latencies for metrics.
* **Randomness outside the scenario's seed:** data, topology, identities, initial models, local training,
  attacks and churn are seeded from ``[run] seed``. Not seeded, on purpose: differential privacy's noise
  (``p2pfl.privacy.dpsgd.fresh_rng``: noise an observer could predict protects nothing) and secure
  aggregation's masks and keys (``os.urandom``); a scenario with ``[privacy]`` or ``[secagg]`` reproduces its
  schedule but not its noise. A ``flood`` attacker signs its burst in a worker thread of its own, so when
  the burst is ready is not reproducible either.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import trio
import trio.testing

from p2pfl.errors import StateError

from .runner import RunOutput
from .scenario import Scenario


def mock_clock_running() -> bool:
    """Whether the running trio loop is driven by a :class:`trio.testing.MockClock`."""
    return isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)


def _scheduler_random() -> random.Random:
    from trio._core import _run

    r = getattr(_run, "_r", None)
    if not isinstance(r, random.Random):
        raise StateError(f"trio {trio.__version__} has no scheduler random (trio._core._run._r) to seed")
    return r


@contextmanager
def seeded_scheduler(seed: int) -> Iterator[None]:
    """Seed trio's scheduling order for the block (module docstring); its previous state comes back after."""
    r = _scheduler_random()
    state = r.getstate()
    r.seed(seed)
    try:
        yield
    finally:
        r.setstate(state)


def run_reproducible(scenario: Scenario, out: Path, *, quiet: bool = True) -> RunOutput:
    """Run ``scenario`` on the memory engine, on an autojumping mock clock with the scheduler seeded from
    ``[run] seed``: the same scenario under the same ``PYTHONHASHSEED`` gives the same :class:`RunOutput`
    (but ``wall_s`` and the traces' ``t``). Its ``time_limit_s`` is simulated time."""
    from .engine_memory import run_memory

    with seeded_scheduler(scenario.run.seed):
        clock = trio.testing.MockClock(autojump_threshold=0)
        return trio.run(partial(run_memory, scenario, out, quiet=quiet), clock=clock)
