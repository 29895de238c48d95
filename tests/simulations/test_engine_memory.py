"""The memory engine's scale paths (simulations/engine_memory.py, benchmarks/bench_scale.py): blocking work
inline on one BLAS thread, the per-round test accuracy, and the parallel static dials a libp2p worker makes
before it listens."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

from p2pfl.identity import Identity
from p2pfl.learner import Dataset, NumpySoftmaxLearner
from p2pfl.peer import Peer, PeerConfig
from p2pfl.sim.engine_memory import GC_YOUNG, Collector, run_memory
from p2pfl.sim.scenario import parse_scenario
from p2pfl.transport.memory import MemoryNetwork


def _tiny_scenario() -> Any:
    return parse_scenario(
        {
            "run": {"seed": 0, "rounds": 2, "transport": "memory", "time_limit_s": 120},
            "data": {"dataset": "synthetic", "partition": "iid", "synthetic_samples": 6400},
            "model": {"kind": "logreg", "local_steps": 2, "batch_size": 8},
            "topology": {"peers": 64, "kind": "random-regular", "degree": 4},
        },
        name="engine-memory",
    )


@dataclass
class _SpiedRun:
    """One run of the tiny scenario with every training call spied on, and the collector's state after it."""

    out: Any
    #: per training call: (on the loop's thread, BLAS thread counts, gc freeze count, gc young threshold)
    seen: list[tuple[bool, list[int], int, int]]
    threshold_before: tuple[int, ...]
    threshold_after: tuple[int, ...]
    frozen_after: int


@pytest.fixture(scope="module")
def spied_run(tmp_path_factory: pytest.TempPathFactory) -> _SpiedRun:
    """The run both tests below read (it is read-only for them): one 64-peer run instead of one each."""
    seen: list[tuple[bool, list[int], int, int]] = []
    train = NumpySoftmaxLearner.train

    def spy(self: NumpySoftmaxLearner, steps: int) -> Any:
        blas = [int(lib["num_threads"]) for lib in threadpool_info() if lib.get("user_api") == "blas"]
        on_main = threading.current_thread() is threading.main_thread()
        seen.append((on_main, blas, gc.get_freeze_count(), gc.get_threshold()[0]))
        return train(self, steps)

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(NumpySoftmaxLearner, "train", spy)
        before = gc.get_threshold()
        out = trio.run(lambda: run_memory(_tiny_scenario(), tmp_path_factory.mktemp("spied"), quiet=True))
        return _SpiedRun(out, seen, before, gc.get_threshold(), gc.get_freeze_count())


def test_memory_engine_runs_the_peers_work_inline_on_one_blas_thread(spied_run: _SpiedRun) -> None:
    """Every training call runs on the loop's thread (no worker-thread hand-offs) with numpy's BLAS held to
    one thread, and the run still completes every round."""
    out, seen = spied_run.out, spied_run.seen
    assert not out.timed_out
    assert all(p["rounds"] >= 2 for p in out.peers)
    assert len(seen) >= 128
    assert all(on_main for on_main, _, _, _ in seen)
    assert all(all(n == 1 for n in blas) for _, blas, _, _ in seen)


def test_memory_engine_keeps_the_collector_off_the_live_peers_and_restores_it(spied_run: _SpiedRun) -> None:
    """During the rounds the set-up's objects are frozen (out of the cyclic collector's sweeps) and young
    collections are rarer; afterwards the collector is as it was, with nothing left frozen."""
    seen, before = spied_run.seen, spied_run.threshold_before
    assert not spied_run.out.timed_out
    assert len(seen) >= 128
    assert all(frozen > 10_000 for _, _, frozen, _ in seen)
    assert all(young == GC_YOUNG > before[0] for _, _, _, young in seen)
    assert spied_run.threshold_after == before
    assert spied_run.frozen_after == 0


class _Node:
    """An object in a reference cycle with itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_collector_freezes_what_survives_a_young_collection_and_still_frees_young_cycles() -> None:
    """Off during the set-up; during the rounds a young collection still runs by itself (every GC_YOUNG
    allocations) and frees cyclic garbage, and what it finds alive is frozen, out of the older generations'
    sweeps. Afterwards the collector is as it was, with nothing frozen and no callback left."""
    before = (gc.get_threshold(), gc.isenabled(), list(gc.callbacks))
    with Collector() as collector:
        assert not gc.isenabled()
        collector.rounds_start()
        assert gc.isenabled() == before[1]
        frozen = gc.get_freeze_count()
        alive = [[i] for i in range(1000)]  # survivors of the next collection
        node = _Node()
        dead = weakref.ref(node)
        del node
        keep = []
        for i in range(3 * GC_YOUNG):  # allocations only: the young collection runs on its own
            keep.append([i])
            if dead() is None:
                break
        assert dead() is None
        assert gc.get_freeze_count() >= frozen + len(alive)
        assert gc.get_count()[1] == gc.get_count()[2] == 0  # nothing waits in the older generations
    assert (gc.get_threshold(), gc.isenabled(), list(gc.callbacks)) == before
    assert gc.get_freeze_count() == 0


finite = st.floats(-50, 50, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(
    hidden=st.sampled_from([0, 4]),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1.0, 1e3, float("inf")]),
)
def test_accuracy_on_equals_evaluate_on(hidden: int, seed: int, scale: float) -> None:
    """The trace's accuracy alone is exactly ``evaluate_on``'s, also for a model that overflows."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    learner = NumpySoftmaxLearner(Dataset(x, y), Dataset(x, y), 3, hidden=hidden, seed=seed)
    learner.train(3)
    params = {k: (v * np.float32(scale) if scale != 1.0 else v) for k, v in learner.get_params().items()}
    test = Dataset(rng.standard_normal((100, 6)).astype(np.float32), rng.integers(0, 3, 100))
    with np.errstate(all="ignore"):
        assert learner.accuracy_on(test, params) == learner.evaluate_on(test, params).accuracy
        assert learner.accuracy_on(test) == learner.evaluate_on(test).accuracy
    assert learner.accuracy_on(Dataset(x[:0], y[:0])) is None


class _SlowDials:
    """A memory transport whose dials take 1 s (mock time) and count how many are in flight at once."""

    def __init__(self, inner: Any, state: dict[str, int]) -> None:
        self._inner = inner
        self._state = state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def connect(self, addr: str) -> str:
        self._state["now"] += 1
        self._state["max"] = max(self._state["max"], self._state["now"])
        try:
            await trio.sleep(1.0)
            raise_unreachable(addr)
            return ""
        finally:
            self._state["now"] -= 1


def raise_unreachable(addr: str) -> None:
    from p2pfl.errors import TransportError

    raise TransportError(f"dial {addr} failed: not up yet")


async def test_static_peers_are_dialled_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """A peer entering with 6 static peers that are not up yet dials them concurrently: a simulation worker
    listens (and says it is online) only after these dials, which took one retry budget each in turn."""
    state = {"now": 0, "max": 0}
    net = MemoryNetwork()

    @asynccontextmanager
    async def factory(ident: Identity) -> AsyncIterator[Any]:
        async with net.open(network_id="n", seed=ident.seed) as t:
            yield _SlowDials(t, state)

    static = tuple(
        f"/ip4/127.0.0.1/tcp/{4000 + i}/p2p/{Identity(bytes([i + 9]) * 32).peer_id}" for i in range(6)
    )
    config = PeerConfig(network_id="n", status_interval_s=0, static_peers=static)
    data = Dataset(np.zeros((4, 3), np.float32), np.zeros(4, np.int64))
    me = Identity(bytes([58]) * 32)  # a lower peer id than all 6 dials them at once (p2pfl.protocol.dialling)
    assert all(me.peer_id < addr.rpartition("/")[2] for addr in static)
    peer = Peer(config, NumpySoftmaxLearner(data, data, 2), me, transport=factory)
    with trio.fail_after(30):
        async with peer:
            pass
    assert state["max"] == 6
