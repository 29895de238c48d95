"""What a finished simulated peer does while slower peers still run (simulations/after_rounds.py):
"mix" (the default: keep running rounds), "respond" (a round per new version of an unfinished neighbour) or
"serve" (serve the final model only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from p2pfl.learner import NumpySoftmaxLearner
from p2pfl.protocol import Replica
from p2pfl.sim.after_rounds import AfterRounds
from p2pfl.sim.engine_memory import run_memory
from p2pfl.sim.scenario import ScenarioError, parse_scenario
from p2pfl.wire import Meta

PEERS, ROUNDS = 6, 3


def _scenario(after: str | None) -> Any:
    run = {"seed": 0, "rounds": ROUNDS, "transport": "memory", "time_limit_s": 120}
    if after is not None:
        run["after_rounds"] = after
    return parse_scenario(
        {
            "run": run,
            "data": {"dataset": "synthetic", "partition": "iid", "synthetic_samples": 1200},
            "model": {"kind": "logreg", "local_steps": 2, "batch_size": 8},
            "topology": {"peers": PEERS, "kind": "ring"},
        },
        name="after-rounds",
    )


def test_the_behaviour_is_named_and_mix_is_the_default() -> None:
    assert _scenario(None).run.after_rounds == "mix"
    assert _scenario("serve").run.after_rounds == "serve"
    with pytest.raises(ScenarioError, match="after_rounds"):
        _scenario("train")


def _rep(peer: str, seq: int, round_: int) -> Replica:
    return Replica(peer, np.zeros(2, np.float32), seq, b"d", 0.0, Meta(round=round_))


def test_each_rule_on_a_finished_peer() -> None:
    never = lambda _p: False  # noqa: E731 - nobody evicted
    for mode in ("mix", "serve", "respond"):
        assert AfterRounds(mode, ROUNDS).runs_round(ROUNDS - 1, {}, never)  # unfinished: always
    assert AfterRounds("mix", ROUNDS).runs_round(ROUNDS + 5, {}, never)
    assert not AfterRounds("serve", ROUNDS).runs_round(ROUNDS, {"a": _rep("a", 1, 1)}, never)
    respond = AfterRounds("respond", ROUNDS)
    slow, done = _rep("slow", 2, ROUNDS - 1), _rep("done", 9, ROUNDS + 4)
    assert not respond.runs_round(ROUNDS, {"done": done}, never)  # every neighbour finished: nothing
    assert respond.runs_round(ROUNDS, {"done": done, "slow": slow}, never)  # a slower one's new version
    assert not respond.runs_round(ROUNDS, {"done": done, "slow": slow}, never)  # answered once
    assert respond.runs_round(ROUNDS, {"slow": _rep("slow", 3, ROUNDS - 1)}, never)  # its next one
    assert not respond.runs_round(ROUNDS, {"slow": _rep("slow", 4, ROUNDS)}, never)  # it is done too
    assert not AfterRounds("respond", ROUNDS).runs_round(ROUNDS, {"slow": slow}, lambda _p: True)  # evicted


def test_a_serving_finished_peer_trains_no_more_rounds(tmp_path: Path, monkeypatch: Any) -> None:
    """Every peer trains exactly its rounds under "serve" (no churn: none has to catch up)."""
    calls = [0]
    train = NumpySoftmaxLearner.train

    def count(self: NumpySoftmaxLearner, steps: int) -> Any:
        calls[0] += 1
        return train(self, steps)

    monkeypatch.setattr(NumpySoftmaxLearner, "train", count)
    out = trio.run(lambda: run_memory(_scenario("serve"), tmp_path, quiet=True))
    assert not out.timed_out
    assert all(p["rounds"] == ROUNDS for p in out.peers)
    assert calls[0] == PEERS * ROUNDS
