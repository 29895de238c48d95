"""The libp2p engine's worker start gate (simulations/worker.py): a worker says it is online once it
listens, and dials its static peers only after the parent's start signal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pfl.sim.engine_libp2p import _free_ports
from p2pfl.sim.plan import load_splits, make_plan, save_splits
from p2pfl.sim.runner import IMPORT_ROOT
from p2pfl.sim.scenario import parse_scenario

UNREACHABLE = "static peer not reachable yet"


def _wait_for(path: Path, proc: subprocess.Popen[bytes], limit_s: float = 120.0) -> None:
    for _ in range(int(limit_s / 0.05)):
        if path.exists() or proc.poll() is not None:
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_worker_is_online_when_listening_and_dials_after_the_start_signal(tmp_path: Path) -> None:
    """Peer 0 of two, its neighbour never started: ``online`` appears with no dial attempted (the old
    order dialled first, paying the swarm's retries for every neighbour not up yet); after ``go`` it dials
    (and fails, logged), and ``stop`` ends it."""
    sc = parse_scenario(
        {
            "run": {"seed": 0, "rounds": 2, "transport": "libp2p", "time_limit_s": 60},
            "data": {"dataset": "synthetic", "partition": "iid", "synthetic_samples": 400},
            "model": {"kind": "logreg", "local_steps": 1},
            "topology": {"peers": 2, "kind": "complete"},
        },
        name="gate",
    )
    ports = _free_ports(2)
    make_plan(sc, ports)
    (tmp_path / "scenario.json").write_text(json.dumps(sc.to_dict()))
    save_splits(load_splits(sc), tmp_path / "data.npz")
    (tmp_path / "control").mkdir()
    d = tmp_path / "peers" / "0"
    d.mkdir(parents=True)
    env = {
        **os.environ,
        "P2PFL_SIM_LOG": "INFO",
        "PYTHONPATH": os.pathsep.join([str(IMPORT_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    argv = ["--out", str(tmp_path), "--index", "0", "--ports", ",".join(map(str, ports)), "--t0", "0"]
    with open(d / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2pfl.sim.worker", *argv], stderr=log, env=env, cwd=str(IMPORT_ROOT)
        )
    try:
        _wait_for(d / "online", proc)
        assert (d / "online").exists(), (d / "worker.log").read_text()[-2000:]
        time.sleep(0.5)  # a dial started before the gate would have logged by now
        assert UNREACHABLE not in (d / "worker.log").read_text()
        (tmp_path / "control" / "go").touch()
        for _ in range(600):
            if UNREACHABLE in (d / "worker.log").read_text() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert UNREACHABLE in (d / "worker.log").read_text()
        (tmp_path / "control" / "stop").touch()
        assert proc.wait(timeout=60) == 0, (d / "worker.log").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
