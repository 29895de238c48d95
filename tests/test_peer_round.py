"""A peer's round end to end with scripted learners: what it evaluates, keeps, logs and persists."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trio

from p2pfl.identity import Identity
from p2pfl.learner import Dataset, EvalResult, NumpySoftmaxLearner, TrainResult
from p2pfl.peer import Peer, PeerConfig
from p2pfl.protocol import GossipEngine, ProtocolConfig, Publish, Replica
from p2pfl.state import read_log
from p2pfl.transport.memory import MemoryNetwork


class ScriptedLearner:
    """Training yields a scripted model per round; a model's accuracy is its first parameter (so the
    accuracy the peer sees says which model it evaluated)."""

    def __init__(self, trained: list[float]) -> None:
        self.trained = list(trained)
        self.params: dict[str, npt.NDArray[np.float32]] = {"w": np.zeros(4, np.float32)}

    def get_params(self) -> dict[str, npt.NDArray[np.float32]]:
        return {k: v.copy() for k, v in self.params.items()}

    def set_params(self, params: Mapping[str, npt.NDArray[Any]]) -> None:
        self.params = {k: np.array(v, np.float32) for k, v in params.items()}

    def train(self, steps: int) -> TrainResult:
        self.params = {"w": np.full(4, self.trained.pop(0), np.float32)}
        return TrainResult(loss=0.5, samples=10, steps=steps)

    def evaluate(self, params: Mapping[str, npt.NDArray[Any]] | None = None) -> EvalResult:
        w = (params if params is not None else self.params)["w"]
        return EvalResult(loss=1.0 - float(w[0]), accuracy=float(w[0]), samples=10)


def poison(peer: Peer, value: float) -> None:
    """Give the peer one fresh neighbour replica (a model of all ``value``) to mix."""
    vec = np.full(peer.engine.layout.size, value, np.float32)
    peer.engine.replicas["mallory"] = Replica(
        "mallory", vec, 1, peer.engine.layout.digest(vec), trio.current_time()
    )


def lone_peer(config: PeerConfig, learner: Any, key: int, metrics: bool | None = None) -> Peer:
    """A peer on its own memory network (neighbours, if any, are engines the test drives by hand)."""
    net = MemoryNetwork()
    return Peer(
        config,
        learner,
        Identity(bytes([key]) * 32),
        transport=lambda i: net.open(network_id="digits", seed=i.seed),
        metrics=metrics,
    )


async def test_a_rollback_restores_the_trained_model_kept_by_the_mix_guard_never_the_refused_mix(
    tmp_path: Path,
) -> None:
    """Regression: after the mix guard refused a mix, the rollback guard remembered the refused mix under the
    trained model's accuracy; a later accuracy drop rolled the peer back onto the poisoned mix."""
    learner = ScriptedLearner([0.9, 0.85, 0.3])
    config = PeerConfig(
        network_id="digits",
        status_interval_s=0,
        state_dir=tmp_path,
        min_neighbours=0,
        mix_scope="all",
        scoring_enabled=False,
        mix_guard_margin=0.5,
        rollback_margin=0.3,
        rollback_warmup=0,
    )
    peer = lone_peer(config, learner, 1)
    async with peer:
        poison(peer, -0.7)  # mixed with the trained 0.9: accuracy far below 0.45
        r1 = await peer.step()
        assert r1.mix_refused and r1.val_accuracy == pytest.approx(0.9)
        peer.engine.replicas.clear()
        r2 = await peer.step()
        assert not r2.rolled_back and r2.val_accuracy == pytest.approx(0.85)
        r3 = await peer.step()
        assert r3.rolled_back
        kept = peer.params()["w"]
        assert np.array_equal(kept, np.full(4, 0.9, np.float32)), kept  # round 1's trained model
    events = [(r.event, r.seq) for r in read_log(tmp_path)]
    assert ("mix_refused", 1) in events and ("rollback", 3) in events


class BlockingLearner(ScriptedLearner):
    """Its first evaluation of a neighbour model blocks until released: gossip runs on meanwhile. Every
    evaluated model is recorded (a model's loss is the sum of its parameters)."""

    def __init__(self) -> None:
        super().__init__([0.1] * 10)
        self.evaluated: list[float] = []
        self.inside = threading.Event()
        self.release = threading.Event()

    def evaluate(self, params: Mapping[str, npt.NDArray[Any]] | None = None) -> EvalResult:
        w = (params if params is not None else self.params)["w"]
        if params is not None and not self.inside.is_set() and float(w[0]) >= 1.0:
            self.inside.set()
            assert self.release.wait(30), "never released"
        self.evaluated.append(float(w.sum()))
        return EvalResult(loss=float(w.sum()), accuracy=None, samples=10)


async def test_a_neighbour_model_replaced_during_its_evaluation_is_evaluated_in_the_next_round() -> None:
    """Regression: the evaluation thread read the replica lazily and its loss was filed under the version
    the replica had afterwards, so a model that replaced it meanwhile was never evaluated (and was scored
    with its predecessor's loss)."""
    learner = BlockingLearner()
    config = PeerConfig(network_id="digits", status_interval_s=0, min_neighbours=0, mix_scope="all")
    peer = lone_peer(config, learner, 1)
    bob = GossipEngine(Identity(b"\x02" * 32), ProtocolConfig(network_id="digits"), learner.get_params())
    async with peer:
        bob.finish_round({"w": np.full(4, 1.0, np.float32)}, 0)
        # peer learns bob's version 1 from a snapshot, before version 2 exists
        peer.engine.handle_snapshot(bob.serve_snapshot(0), bob.peer_id, trio.current_time())
        second = bob.finish_round({"w": np.full(4, 2.0, np.float32)}, 0).actions[0]
        assert isinstance(second, Publish)
        assert peer.engine.replicas[bob.peer_id].seq == 1
        async with trio.open_nursery() as n:
            n.start_soon(peer.step)
            with trio.fail_after(30):
                await trio.to_thread.run_sync(learner.inside.wait)
            # bob's version 2 arrives while version 1 is being evaluated in the worker thread
            peer.engine.handle_announce(second.envelope, bob.peer_id, trio.current_time())
            assert peer.engine.replicas[bob.peer_id].seq == 2
            learner.release.set()
        assert 4.0 in learner.evaluated  # version 1 (sum 4) was evaluated in round 1
        learner.evaluated.clear()
        await peer.step()
        assert 8.0 in learner.evaluated  # version 2 (sum 8) is evaluated in round 2


class OverflowsOnce(NumpySoftmaxLearner):
    """Its second round starts from a model that overflows (as a poisoned mix can make it): that round
    diverges for real, momentum included; every other round trains normally."""

    def __init__(self) -> None:
        rng = np.random.default_rng(2)
        x = rng.normal(size=(64, 8)).astype(np.float32)
        y = rng.integers(0, 3, 64)
        super().__init__(Dataset(x, y), Dataset(x, y), 3, hidden=4, seed=2)
        self.calls = 0

    def train(self, steps: int) -> TrainResult:
        self.calls += 1
        if self.calls == 2:
            self.set_params({k: (v + 1.0) * 1e20 for k, v in self.get_params().items()})
        return super().train(steps)


@pytest.mark.parametrize("metrics", [None, True], ids=["plain", "timed-learner"])
async def test_a_peer_trains_again_after_a_diverged_round(tmp_path: Path, metrics: bool | None) -> None:
    """Regression: a diverged round left the learner's momentum non-finite, and the peer discarded every
    later round too ("local training diverged" every round, for good). The peer drops the optimiser state
    with the diverged round, so the next round trains; with metrics on, through the timed learner that
    delegates it (``__getattr__``)."""
    learner = OverflowsOnce()
    config = PeerConfig(network_id="digits", status_interval_s=0, state_dir=tmp_path, min_neighbours=0)
    peer = lone_peer(config, learner, 2, metrics=metrics)
    async with peer:
        await peer.step()
        before = peer.params()
        await peer.step()  # diverges: the round keeps its start
        assert peer.local_divergences == 1
        assert all(np.array_equal(before[k], peer.params()[k]) for k in before)
        for _ in range(2):
            await peer.step()
        after = peer.params()
    assert peer.local_divergences == 1
    assert all(np.isfinite(v).all() for v in after.values())
    assert any(not np.array_equal(before[k], after[k]) for k in before)
