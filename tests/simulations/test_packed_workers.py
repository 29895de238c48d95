"""Several real libp2p peers per worker process (``[run] peers_per_process``): each keeps its own host, port,
state and files; churn restarts a peer inside its process; a crashed peer ends alone and fails the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from p2pfl.sim import engine_libp2p
from p2pfl.sim.engine_libp2p import peer_groups
from p2pfl.sim.plan import load_splits, save_splits
from p2pfl.sim.runner import IMPORT_ROOT, run_scenario
from p2pfl.sim.scenario import ScenarioError, SimulationError, parse_scenario

SMALL: dict[str, dict[str, Any]] = {
    "run": {"seed": 3, "rounds": 6, "transport": "libp2p", "time_limit_s": 120, "peers_per_process": 2},
    "data": {"dataset": "digits", "partition": "iid"},
    "model": {"kind": "logreg", "local_steps": 5},
    "topology": {"peers": 4, "kind": "complete"},
}


def scenario(**sections: dict[str, Any]) -> Any:
    data = {k: dict(v) for k, v in SMALL.items()}
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    return parse_scenario(data, name="packed")


def test_peer_groups() -> None:
    assert peer_groups(5, 1) == [[0], [1], [2], [3], [4]]
    assert peer_groups(5, 2) == [[0, 1], [2, 3], [4]]
    assert peer_groups(5, 9) == [[0, 1, 2, 3, 4]]
    assert peer_groups(32, "auto", cores=2) == [list(range(16)), list(range(16, 32))]
    assert peer_groups(5, "auto", cores=2) == [[0, 1, 2], [3, 4]]


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5, True])
def test_peers_per_process_is_checked(bad: object) -> None:
    with pytest.raises(ScenarioError, match="peers_per_process"):
        scenario(run={"peers_per_process": bad})
    assert scenario(run={"peers_per_process": "auto"}).run.peers_per_process == "auto"


def test_packing_is_refused_by_the_memory_engine() -> None:
    """Every memory-engine peer already shares one process: packing there is a mistake, not a no-op."""
    with pytest.raises(ScenarioError, match="peers_per_process"):
        scenario(run={"transport": "memory", "peers_per_process": 2})
    assert scenario(run={"transport": "memory", "peers_per_process": 1}).run.transport == "memory"


def test_packed_peers_run_isolated_with_churn(tmp_path: Path) -> None:
    """4 peers in one process; peer 0 crashes after round 2 and restarts inside its process (a new host on
    its port), with its process-mates running on. Every peer keeps its own directory and files, and since
    every neighbour is a process-mate, whatever they learned together crossed TCP between mates."""
    sc = scenario(
        run={"peers_per_process": 4}, churn={"crashes": [{"peer": 0, "round": 2, "downtime_s": 0.3}]}
    )
    r = run_scenario(sc, tmp_path, quiet=True, plots=False)
    assert not r["timed_out"]
    peers = {p["index"]: p for p in r["peers"]}
    assert all(p["rounds"] == 6 for p in peers.values()), [p["rounds"] for p in peers.values()]
    assert peers[0]["restarts"] == 1 and all(peers[i]["restarts"] == 0 for i in (1, 2, 3))
    assert r["honest_accuracy"]["mean"] >= 0.8, r["honest_accuracy"]
    for i in range(4):
        d = tmp_path / "peers" / str(i)
        for name in ("online", "finished", "result.json", "status.json", "final.p2ck"):
            assert (d / name).exists(), (i, name)
        assert json.loads((d / "result.json").read_text())["index"] == i
        assert not (d / engine_libp2p.CRASHED).exists()
    # one log per process, in its first peer's directory, linked from the others'
    first = (tmp_path / "peers" / "0" / "worker.log").resolve()
    assert all((tmp_path / "peers" / str(i) / "worker.log").resolve() == first for i in (1, 2, 3))
    assert all(p["bytes_received"] > 0 for p in peers.values())  # every byte came from a process-mate


def test_a_crashed_peer_fails_the_run_at_once(tmp_path: Path, port_1_taken: object) -> None:
    """Peer 1 of a process of 3 crashes: its process lives on, but the run fails at once naming peer 1 with
    its traceback (not at the gate's time limit)."""
    sc = scenario(run={"rounds": 2, "time_limit_s": 600, "peers_per_process": 3}, topology={"peers": 3})
    with pytest.raises(SimulationError, match="peer 1 crashed before finishing") as err:
        run_scenario(sc, tmp_path, quiet=True, plots=False)
    assert "Traceback" in str(err.value) and "within the time limit" not in str(err.value)


def _wait_for(paths: list[Path], proc: subprocess.Popen[bytes], limit_s: float = 120.0) -> None:
    for _ in range(int(limit_s / 0.05)):
        if all(p.exists() for p in paths) or proc.poll() is not None:
            return
        time.sleep(0.05)


def test_a_crashed_peer_leaves_its_process_mates_running(tmp_path: Path, port_1_taken: object) -> None:
    """One worker process with peers 0, 1 and 2, peer 1's port taken: peer 1 crashes alone (``crashed``, its
    result's ``error``, its index on the log's traceback); peers 0 and 2 listen and live on, and the process
    exits with 1 when stopped. (Packed peers running rounds with churn: the test above.)"""
    sc = scenario(run={"rounds": 2, "peers_per_process": 3}, topology={"peers": 3})
    ports = engine_libp2p._free_ports(3)
    (tmp_path / "scenario.json").write_text(json.dumps(sc.to_dict()))
    save_splits(load_splits(sc), tmp_path / "data.npz")
    (tmp_path / "control").mkdir()
    peers = tmp_path / "peers"
    for i in range(3):
        (peers / str(i)).mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(IMPORT_ROOT), os.environ.get("PYTHONPATH", "")])}
    argv = ["--out", str(tmp_path), "--index", "0,1,2", "--ports", ",".join(map(str, ports)), "--t0", "0"]
    log_path = peers / "0" / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2pfl.sim.worker", *argv], stderr=log, env=env, cwd=str(IMPORT_ROOT)
        )
    try:
        _wait_for([peers / "0" / "online", peers / "2" / "online", peers / "1" / engine_libp2p.CRASHED], proc)
        assert proc.poll() is None, log_path.read_text()[-2000:]
        assert (peers / "0" / "online").exists() and (peers / "2" / "online").exists()
        assert not (peers / "1" / "online").exists()
        time.sleep(0.5)  # a crash that took the process down would have ended it by now
        assert proc.poll() is None, log_path.read_text()[-2000:]
        (tmp_path / "control" / "stop").touch()
        assert proc.wait(timeout=60) == 1, log_path.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert json.loads((peers / "1" / "result.json").read_text())["error"]
    for i in (0, 2):
        assert not (peers / str(i) / engine_libp2p.CRASHED).exists()
        assert "error" not in json.loads((peers / str(i) / "result.json").read_text())
    assert "[peer 1] p2pfl.sim peer 1 crashed" in log_path.read_text()
