"""A seeded scenario on a mock clock reproduces bit for bit (p2pfl.sim.determinism)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pfl.learner import NumpySoftmaxLearner
from p2pfl.sim.determinism import mock_clock_running, run_reproducible, seeded_scheduler
from p2pfl.sim.runner import RunOutput
from p2pfl.sim.scenario import parse_scenario

#: wall-clock figures (of a trace row, of a flood's report): the only ones a reproduced run may change
WALL = ("t",)


def _scenario(seed: int) -> Any:
    """8 peers on a 4-regular graph, 2 sign-flippers, scoring on: evictions, mixing weights and pacing all
    depend on the order in which versions arrive."""
    return parse_scenario(
        {
            "run": {"seed": seed, "rounds": 4, "transport": "memory", "time_limit_s": 300},
            "data": {"dataset": "synthetic", "partition": "iid", "synthetic_samples": 1600},
            "model": {"kind": "logreg", "local_steps": 2, "batch_size": 8},
            "topology": {"peers": 8, "kind": "random-regular", "degree": 4},
            "scoring": {"enabled": True},
            "attack": {"kind": "signflip", "fraction": 0.25, "scale": 4.0},
        },
        name="reproducible",
    )


def _results(out: RunOutput) -> tuple[list[dict[str, Any]], dict[int, bytes]]:
    def row(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k not in WALL}

    def attack(a: dict[str, Any]) -> dict[str, Any]:
        flood = a.get("flood_sent")
        return {**a, "flood_sent": {k: v for k, v in flood.items() if k not in WALL}} if flood else a

    peers = [
        {
            **p,
            "trace": [row(r) for r in p["trace"]],
            **({"attack": attack(p["attack"])} if "attack" in p else {}),
        }
        for p in out.peers
    ]
    return peers, {i: v.tobytes() for i, v in out.vectors.items()}


def test_a_seeded_scenario_on_a_mock_clock_reproduces_bit_for_bit(tmp_path: Path, monkeypatch: Any) -> None:
    """Two runs of one scenario: the same traces (accuracy, bytes, reputations, evictions, round times),
    counters and model vectors. Below 64 peers the engine's default is worker threads, whose real time an
    autojumping clock skips over: that made every run differ. trio's batches come in address order (an
    Event wakes its waiters from a set): that made the second run in a process differ. (Importing
    Hypothesis, as pytest does here, turns trio's ordered scheduling on: off, as in ``p2pfl sim``.)"""
    from trio._core import _run

    monkeypatch.setattr(_run, "_ALLOW_DETERMINISTIC_SCHEDULING", False)
    first = run_reproducible(_scenario(1), tmp_path / "a")
    second = run_reproducible(_scenario(1), tmp_path / "b")
    assert not first.timed_out and not second.timed_out
    assert all(p["rounds"] == 4 for p in first.peers if p["honest"])
    assert _results(first) == _results(second)
    other = run_reproducible(_scenario(2), tmp_path / "c")  # the comparison can tell runs apart
    assert _results(other) != _results(first)


def test_the_scheduler_seed_is_restored_and_the_engine_knows_its_clock(monkeypatch: Any) -> None:
    """``seeded_scheduler`` orders and seeds trio's scheduling for its block and leaves both as it found
    them; ``mock_clock_running`` tells a MockClock from trio's system clock."""
    from trio._core import _run

    monkeypatch.setattr(_run, "_ALLOW_DETERMINISTIC_SCHEDULING", False)
    before = _run._r.getstate()
    with seeded_scheduler(5):
        seeded = _run._r.random()
        assert _run._ALLOW_DETERMINISTIC_SCHEDULING is True
    assert _run._r.getstate() == before
    assert _run._ALLOW_DETERMINISTIC_SCHEDULING is False
    assert seeded == random.Random(5).random()

    async def which() -> bool:
        return mock_clock_running()

    assert trio.run(which, clock=trio.testing.MockClock()) is True
    assert trio.run(which) is False


_CHILD = """
import hashlib, json, sys, tempfile
from pathlib import Path
from p2pfl.learner import NumpySoftmaxLearner
from p2pfl.sim.determinism import run_reproducible
from tests.determinism.test_reproducible import _results, _scenario
with tempfile.TemporaryDirectory() as d:
    peers, vectors = _results(run_reproducible(_scenario(1), Path(d)))
h = hashlib.sha256(json.dumps(peers, sort_keys=True, default=str).encode())
for i in sorted(vectors):
    h.update(vectors[i])
print(h.hexdigest())
"""


@pytest.mark.slow
def test_the_hash_seed_does_not_change_a_reproduced_run() -> None:
    """Under two hash seeds the run is the same: the memory transport's neighbours iterate in the order they
    connected (a set's order of peer-id strings changed the delivery order, hence the whole run)."""
    root = Path(__file__).resolve().parents[2]
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        argv = [sys.executable, "-c", _CHILD]
        opts: dict[str, Any] = {"cwd": root, "env": env, "capture_output": True, "text": True, "timeout": 300}
        done = subprocess.run(argv, check=False, **opts)
        assert done.returncode == 0, done.stderr[-2000:]
        digests.add(done.stdout.strip().splitlines()[-1])
    assert len(digests) == 1


def test_real_time_spent_working_takes_no_simulated_time(tmp_path: Path, monkeypatch: Any) -> None:
    """A machine slow to train (50 ms of real time per call, as under load) does not change the simulated
    run: 2 rounds well inside a 5 s (simulated) limit. With worker threads the autojumping clock ran on
    while they worked: 0.5 s per call timed a run out at 0 rounds."""
    train = NumpySoftmaxLearner.train

    def slow(self: NumpySoftmaxLearner, steps: int) -> Any:
        time.sleep(0.05)
        return train(self, steps)

    monkeypatch.setattr(NumpySoftmaxLearner, "train", slow)
    sc = _scenario(1).replace(run={"rounds": 2, "time_limit_s": 5.0})
    out = run_reproducible(sc, tmp_path)
    assert not out.timed_out
    assert all(p["rounds"] == 2 for p in out.peers if p["honest"])


def test_a_flood_starts_at_the_same_round_in_a_reproduced_run(tmp_path: Path, monkeypatch: Any) -> None:
    """The flooding attacker signs its burst before its ``start_round``; in a worker thread that took real
    time while the simulated rounds ran on, and the burst met the honest peers at a different point."""
    from trio._core import _run

    monkeypatch.setattr(_run, "_ALLOW_DETERMINISTIC_SCHEDULING", False)
    sc = parse_scenario(
        {
            "run": {"seed": 8, "rounds": 4, "transport": "memory", "time_limit_s": 300},
            "data": {"dataset": "synthetic", "partition": "iid", "synthetic_samples": 1000},
            "model": {"kind": "logreg", "local_steps": 2, "batch_size": 8},
            "topology": {"peers": 5, "kind": "complete"},
            "attack": {"kind": "flood", "fraction": 0.2, "start_round": 1, "flood_count": 300},
        },
        name="flood",
    )
    first = run_reproducible(sc, tmp_path / "a")
    second = run_reproducible(sc, tmp_path / "b")
    assert any(p.get("bad_envelopes_sent") for p in first.peers)
    assert _results(first) == _results(second)
