"""The peer's round guards end to end, with a scripted learner: what the peer keeps, logs and persists."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trio

from p2pfl.identity import Identity
from p2pfl.learner import EvalResult, TrainResult
from p2pfl.peer import Peer, PeerConfig
from p2pfl.protocol import Replica
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
    net = MemoryNetwork()
    peer = Peer(
        config,
        learner,
        Identity(b"\x01" * 32),
        transport=lambda i: net.open(network_id="digits", seed=i.seed),
    )
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
