"""The libp2p engine: one OS process per peer (``python -m p2pfl.sim.worker``), real libp2p on 127.0.0.1 (see
:mod:`p2pfl.sim.runner`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from p2pfl.state import load_checkpoint

from .data import Split
from .plan import (
    Plan,
    build_learner,
    load_splits,
    make_plan,
    save_splits,
    total_peers,
)
from .progress import Progress
from .runner import FINAL_CHECKPOINT, IMPORT_ROOT, RunOutput
from .scenario import Scenario, SimulationError

# ---------------------------------------------------------------------------------- libp2p engine


def _free_ports(n: int) -> list[int]:
    import socket

    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(int(s.getsockname()[1]))
    finally:
        for s in socks:
            s.close()
    return ports


def libp2p_addr(plan: Plan, j: int) -> str:
    return f"/ip4/127.0.0.1/tcp/{plan.peers[j].port}/p2p/{plan.peer_ids[j]}"


def run_libp2p(
    scenario: Scenario, out: Path, *, quiet: bool = False, splits: list[Split] | None = None
) -> RunOutput:
    """One worker process per peer; the parent only starts, watches, signals and evaluates. ``splits``: each
    peer's data, instead of the scenario's ``[data]`` (benchmarks/bench_network.py)."""
    n = total_peers(scenario)
    plan = make_plan(scenario, _free_ports(n))
    peers_dir = out / "peers"
    if peers_dir.exists():
        shutil.rmtree(peers_dir)
    peers_dir.mkdir(parents=True)
    (out / "scenario.json").write_text(json.dumps(scenario.to_dict(), indent=2))
    control = out / "control"
    control.mkdir(exist_ok=True)
    for f in ("go", "stop"):
        (control / f).unlink(missing_ok=True)
    ports = [p.port for p in plan.peers]
    t0 = time.time()
    splits = load_splits(scenario) if splits is None else splits
    save_splits(splits, out / "data.npz")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(IMPORT_ROOT), os.environ.get("PYTHONPATH", "")])}
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for i in range(n):
            d = peers_dir / str(i)
            d.mkdir()
            log = open(d / "worker.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "p2pfl.sim.worker",
                        "--out",
                        str(out),
                        "--index",
                        str(i),
                        "--ports",
                        ",".join(map(str, ports)),
                        "--t0",
                        repr(t0),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=env,
                    cwd=str(IMPORT_ROOT),
                )
            )
        progress = Progress(len(plan.honest) * scenario.run.rounds, quiet, steps=scenario.run.rounds)
        deadline = time.monotonic() + scenario.run.time_limit_s
        timed_out = False

        def check_alive() -> None:
            for i, proc in enumerate(procs):
                code = proc.poll()
                if code is not None and not (peers_dir / str(i) / "result.json").exists():
                    tail = (peers_dir / str(i) / "worker.log").read_text(errors="replace")[-3000:]
                    raise SimulationError(f"peer worker {i} exited with {code} before finishing:\n{tail}")

        # start gate: everyone online (listening) before anyone trains
        while not all((peers_dir / str(i) / "online").exists() for i in range(n)):
            check_alive()
            if time.monotonic() > deadline:
                raise SimulationError("peer workers did not come online within the time limit")
            progress.update(
                0, f"online {sum((peers_dir / str(i) / 'online').exists() for i in range(n))}/{n}"
            )
            time.sleep(0.2)
        (control / "go").touch()
        honest = plan.honest
        while True:
            rounds = 0
            for i in honest:
                st = _read_json(peers_dir / str(i) / "status.json")
                rounds += min(int(st.get("round", 0)), scenario.run.rounds) if st else 0
            progress.update(rounds)
            if all((peers_dir / str(i) / "finished").exists() for i in honest):
                break
            check_alive()
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.25)
        progress.close()
        (control / "stop").touch()
        stop_deadline = time.monotonic() + 60.0  # workers get a bounded grace period, then are killed
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, stop_deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        wall = time.time() - t0
    finally:
        (out / "data.npz").unlink(missing_ok=True)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for log in logs:
            log.close()
    results, vectors = [], {}
    for p in plan.peers:
        d = peers_dir / str(p.index)
        res = _read_json(d / "result.json") or {
            "index": p.index,
            "id": plan.peer_ids[p.index],
            "honest": p.honest,
            "kind": p.kind,
            "neighbours": list(p.neighbours),
            "rounds": 0,
            "trace": [],
            "error": "no result.json (worker crashed or was killed)",
        }
        ckpt = load_checkpoint(d, FINAL_CHECKPOINT) or load_checkpoint(d)
        if ckpt is not None:
            with np.errstate(all="ignore"):
                res["final_accuracy"] = (
                    build_learner(scenario, splits[p.index], p.index)
                    .evaluate_on(splits[p.index].test, ckpt.own)
                    .accuracy
                )
            res["rounds"] = max(int(res.get("rounds", 0)), ckpt.round)
        else:
            res["final_accuracy"] = None
        results.append(res)
        if (d / "vectors.npy").exists():
            vectors[p.index] = np.load(d / "vectors.npy")
    return RunOutput(plan, results, vectors, wall, timed_out)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
