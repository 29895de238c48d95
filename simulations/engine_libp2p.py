"""The libp2p engine: one OS process per peer (``python -m p2pfl.sim.worker``), or ``[run] peers_per_process``
peers per process (each its own host and port, one trio loop), real libp2p on 127.0.0.1 (see
:mod:`p2pfl.sim.runner`)."""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
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
from .secagg_sim import transport_summary

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


#: the file a crashed peer leaves in its directory, its traceback (``p2pfl.sim.worker_peer``)
CRASHED = "crashed"
#: how often the parent looks for the last ``finished`` file: the stop signal (and the run's end) waits for
#: it. Every 0.25 s it cost 0.12 s per run on average at the end of the critical path (docs/benchmarks.md, "32
#: peers: the critical path"); the look is a ``stat`` of each file in turn, stopping at the first missing
#: one (at most one per peer: cheap next to a round)
FINISHED_POLL_S = 0.02
#: how often it reads every peer's ``status.json`` for the progress line and checks that the workers live
PROGRESS_S = 0.25


def peer_groups(n: int, per_process: int | str, cores: int | None = None) -> list[list[int]]:
    """The peers of each worker process: consecutive indices, ``per_process`` to a process (the last may
    have fewer); "auto": ``ceil(n / cores)`` (every core one process)."""
    auto = per_process == "auto"
    k = max(1, math.ceil(n / max(1, cores or usable_cores())) if auto else int(per_process))
    return [list(range(s, min(n, s + k))) for s in range(0, n, k)]


def usable_cores() -> int:
    """The cores this process may run on (a container's or ``taskset``'s limit, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _rounds_done(peers_dir: Path, honest: list[int], rounds: int) -> int:
    """The rounds the honest peers report done in their ``status.json`` (each counted up to ``rounds``)."""
    done = 0
    for i in honest:
        st = _read_json(peers_dir / str(i) / "status.json")
        done += min(int(st.get("round", 0)), rounds) if st else 0
    return done


def libp2p_addr(plan: Plan, j: int) -> str:
    return f"/ip4/127.0.0.1/tcp/{plan.peers[j].port}/p2p/{plan.peer_ids[j]}"


def run_libp2p(
    scenario: Scenario, out: Path, *, quiet: bool = False, splits: list[Split] | None = None
) -> RunOutput:
    """One worker process per :func:`peer_groups` group; the parent only starts, watches, signals and
    evaluates. ``splits``: each peer's data, instead of the scenario's ``[data]``
    (benchmarks/bench_network.py)."""
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
    marks = {"called": t0}  # when each stage ended (wall clock): timing.json, for a run's timeline
    start_fork_server()
    marks["fork_server"] = time.time()
    splits = load_splits(scenario) if splits is None else splits
    save_splits(splits, out / "data.npz")
    marks["data"] = time.time()
    groups = peer_groups(n, scenario.run.peers_per_process)
    procs: list[Worker] = []
    try:
        for i in range(n):
            (peers_dir / str(i)).mkdir()
        for g in groups:  # one log per process, in its first peer's directory; its other peers link to it
            for i in g[1:]:
                (peers_dir / str(i) / "worker.log").symlink_to(Path("..") / str(g[0]) / "worker.log")
        ports_arg = ",".join(map(str, ports))
        argvs = [
            ["--out", str(out), "--index", ",".join(map(str, g)), "--ports", ports_arg, "--t0", repr(t0)]
            for g in groups
        ]
        procs = spawn_workers(argvs, [peers_dir / str(g[0]) / "worker.log" for g in groups])
        marks["spawned"] = time.time()
        progress = Progress(len(plan.honest) * scenario.run.rounds, quiet, steps=scenario.run.rounds)
        deadline = time.monotonic() + scenario.run.time_limit_s
        timed_out = False
        honest = set(plan.honest)

        def check_alive(gate: bool = False) -> None:
            """A worker that exited before its peers finished is an error; at the start gate, one that
            exited before they listened is too, result.json or not (its ``finally`` writes one: e.g. a port
            was taken between ``_free_ports`` and its bind; the gate used to wait for it until the time
            limit). So is a peer that crashed before it listened, or an honest one before it finished, its
            process-mates running on (``p2pfl.sim.worker_peer``): its ``online`` or ``finished`` would never
            come."""
            for g, proc in zip(groups, procs, strict=True):
                code = proc.poll()
                for i in g:
                    d = peers_dir / str(i)
                    if code is not None and (
                        not (d / "result.json").exists() or (gate and not (d / "online").exists())
                    ):
                        tail = (d / "worker.log").read_text(errors="replace")[-3000:]
                        raise SimulationError(f"peer worker {i} exited with {code} before finishing:\n{tail}")
                    waited = "online" if gate else "finished" if i in honest else None
                    if (d / CRASHED).exists() and waited is not None and not (d / waited).exists():
                        tail = (d / CRASHED).read_text(errors="replace")[-3000:]
                        raise SimulationError(f"peer {i} crashed before finishing:\n{tail}")

        # start gate: everyone online (listening) before anyone trains
        while not all((peers_dir / str(i) / "online").exists() for i in range(n)):
            check_alive(gate=True)
            if time.monotonic() > deadline:
                raise SimulationError("peer workers did not come online within the time limit")
            progress.update(
                0, f"online {sum((peers_dir / str(i) / 'online').exists() for i in range(n))}/{n}"
            )
            time.sleep(0.02)  # the peers wait at this gate with their dials: every 0.1 s here was 0.1 s late
        (control / "go").touch()
        wake(procs)
        marks["go"] = time.time()
        online_s = marks["go"] - t0
        finished = [peers_dir / str(i) / "finished" for i in plan.honest]
        looked = -PROGRESS_S
        while not all(f.exists() for f in finished):
            if time.monotonic() - looked >= PROGRESS_S:
                looked = time.monotonic()
                progress.update(_rounds_done(peers_dir, plan.honest, scenario.run.rounds))
                check_alive()
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(FINISHED_POLL_S)
        progress.close()
        marks["finished"] = time.time()
        (control / "stop").touch()
        wake(procs)
        stop_at = marks["stop"] = time.time()
        stop_deadline = time.monotonic() + 60.0  # workers get a bounded grace period, then are killed
        for proc in procs:
            if proc.wait(timeout=max(1.0, stop_deadline - time.monotonic())) is None:
                proc.kill()
                proc.wait(10)
        marks["exited"] = time.time()
        wall = marks["exited"] - t0
        # start-up (processes started until every peer listens) and shutdown (stop signal until every
        # worker exited), for benchmarks; the marks for a timeline (benchmarks/netbench/timeline.py)
        timing = {"online_s": round(online_s, 3), "shutdown_s": round(marks["exited"] - stop_at, 3)}
    finally:
        (out / "data.npz").unlink(missing_ok=True)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
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
    marks["evaluated"] = time.time()
    (out / "timing.json").write_text(json.dumps({**timing, "marks": marks}))
    return RunOutput(plan, results, vectors, wall, timed_out, transport_summary(scenario.secagg, results))


# ------------------------------------------------------------------------------------------ spawning
#: Modules the fork server imports once; every worker forked from it starts with them loaded (and with the
#: first-use costs :mod:`.worker_preload` pays done).
PRELOAD = ["p2pfl.sim.worker", "p2pfl.transport.libp2p", "p2pfl.peer", "p2pfl.sim.worker_preload"]


class Worker:
    """A peer worker process: a ``multiprocessing`` child forked from the fork server, or a ``Popen``."""

    def __init__(self, proc: multiprocessing.process.BaseProcess | subprocess.Popen[bytes]) -> None:
        self._proc = proc

    def poll(self) -> int | None:
        if isinstance(self._proc, subprocess.Popen):
            return self._proc.poll()
        return self._proc.exitcode

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if the worker is still running after ``timeout`` s."""
        if isinstance(self._proc, subprocess.Popen):
            try:
                return self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        self._proc.join(timeout)
        return self._proc.exitcode

    def kill(self) -> None:
        self._proc.kill()

    def wake(self, signum: int) -> None:
        """Send ``signum`` (a worker's wake-up: look at the control files now); a no-op once it exited."""
        pid = self._proc.pid
        if pid is not None and self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def wake(workers: list[Worker]) -> None:
    """Tell every worker to look at the control files now (``p2pfl.sim.worker.Control``): without it each
    worker polled them every 20-50 ms for the whole run."""
    from .worker import WAKE_SIGNAL

    if WAKE_SIGNAL is not None:
        for w in workers:
            w.wake(WAKE_SIGNAL)


def _use_fork_server() -> bool:
    return (
        os.environ.get("P2PFL_SIM_SPAWN") != "exec"
        and "forkserver" in multiprocessing.get_all_start_methods()
    )


def start_fork_server() -> None:
    """Start the fork server now (it imports :data:`PRELOAD` while the caller prepares the data); a no-op
    once it runs, or when workers are exec'd."""
    if _use_fork_server():
        from multiprocessing import forkserver

        multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
        forkserver.ensure_running()


def spawn_workers(argvs: list[list[str]], logs: list[Path]) -> list[Worker]:
    """Start one worker process per argument list, stderr to its log.

    Forked from a fork server that imported :data:`PRELOAD` once (``multiprocessing``'s forkserver start
    method: the server is a fresh interpreter, not a copy of this process). Measured on 16 peers, 2 cores:
    each ``python -m p2pfl.sim.worker`` spent ~3 s of CPU importing libp2p and p2pfl before listening, all
    16 at once competing for 2 cores. ``P2PFL_SIM_SPAWN=exec`` (or a platform without fork) starts fresh
    interpreters instead."""
    if (
        os.environ.get("P2PFL_SIM_SPAWN") != "exec"
        and "forkserver" in multiprocessing.get_all_start_methods()
    ):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        from .worker import run_forked

        env, cwd = dict(os.environ), str(IMPORT_ROOT)
        workers = []
        for argv, log in zip(argvs, logs, strict=True):
            proc = ctx.Process(target=run_forked, args=(argv, str(log), env, cwd), daemon=False)
            proc.start()
            workers.append(Worker(proc))
        return workers
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(IMPORT_ROOT), os.environ.get("PYTHONPATH", "")])}
    out = []
    for argv, log in zip(argvs, logs, strict=True):
        with open(log, "wb") as f:
            out.append(
                Worker(
                    subprocess.Popen(
                        [sys.executable, "-m", "p2pfl.sim.worker", *argv],
                        stdout=subprocess.DEVNULL,
                        stderr=f,
                        env=env,
                        cwd=str(IMPORT_ROOT),
                    )
                )
            )
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
