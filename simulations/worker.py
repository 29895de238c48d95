"""A libp2p engine worker: one OS process running one peer, or several (``[run] peers_per_process``), in
one trio loop (started by :func:`.engine_libp2p.run_libp2p`).

``python -m p2pfl.sim.worker --out DIR --index I[,J,...] --ports P0,P1,... --t0 T``

Reads ``DIR/scenario.json``, runs the real :class:`p2pfl.peer.Peer` of each of its peers over libp2p on
``127.0.0.1:P_I`` with its topology neighbours as static peers (:mod:`p2pfl.sim.worker_peer`: each peer has
its own host, keys, port and state directory), and talks to the parent through files in ``DIR/peers/I/``:
``online`` (listening), ``status.json`` and the checkpoint (written by the peer every round), ``finished``
(its rounds are done, with ``result.json`` and ``final.p2ck`` frozen then; it keeps running rounds so that
slower neighbours never wait for a silent peer), ``vectors.npy`` (at exit), ``crashed`` (its traceback, if it
raised). Once listening it waits for ``DIR/control/go`` (every peer listens) before it dials anyone, and stops
when ``DIR/control/stop`` appears. Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from threadpoolctl import threadpool_limits

from p2pfl.config.schema import toml_keys
from p2pfl.diag import task_tree

from .runner import make_plan
from .scenario import parse_scenario
from .worker_peer import HonestRounds, PeerLogFilter, WorkerPeer

#: the parent's wake-up: sent to every worker right after it creates ``DIR/control/go`` or ``.../stop``
#: (the files say what happened; the signal only says "look now"). None where the platform has no SIGUSR1.
WAKE_SIGNAL: signal.Signals | None = getattr(signal, "SIGUSR1", None)
#: how often a worker looks at the control files without a wake-up (a safety net: a wake-up is not lost
#: once the worker listens for it); without wake-up signals, how often it polls them
CONTROL_POLL_S = 1.0 if WAKE_SIGNAL is not None else 0.02


class Control:
    """The parent's two control files as events, looked at when the parent's wake-up signal arrives.

    Polling them cost every worker a wake-up and a ``stat`` every 20-50 ms for the whole run (32 peers:
    4 % of all worker CPU, measured with ``P2PFL_SIM_PROFILE=sample``); the files stay the truth."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.go = trio.Event()
        self.stop = trio.Event()

    def check(self) -> None:
        for name, event in (("go", self.go), ("stop", self.stop)):
            if not event.is_set() and (self.directory / name).exists():
                event.set()

    async def watch(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen for wake-ups, then look at the files (a wake-up sent before we listened is covered by
        that first look), and again at every wake-up and every ``CONTROL_POLL_S``, until told to stop."""
        if WAKE_SIGNAL is None:
            self.check()
            task_status.started()
            while not self.stop.is_set():
                await trio.sleep(CONTROL_POLL_S)
                self.check()
            return
        with trio.open_signal_receiver(WAKE_SIGNAL) as wakeups:
            self.check()
            task_status.started()
            while not self.stop.is_set():
                with trio.move_on_after(CONTROL_POLL_S):
                    async for _ in wakeups:
                        break
                self.check()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="p2pfl.sim.worker")
    ap.add_argument("--out", required=True)
    ap.add_argument("--index", required=True, help="the peer's index, or several: I,J,... (one trio loop)")
    ap.add_argument("--ports", required=True)
    ap.add_argument("--t0", type=float, required=True)
    args = ap.parse_args(argv)
    mark("main")
    if WAKE_SIGNAL is not None:  # a wake-up before the worker listens for it must not kill it
        signal.signal(WAKE_SIGNAL, signal.SIG_IGN)
    # one BLAS thread: 32-64 peer processes on a few cores, each with OpenBLAS's own pool of one thread per
    # core, measured 5-13 ms for a forward that takes 0.7 ms on one thread
    threadpool_limits(limits=1, user_api="blas")
    indices = [int(i) for i in args.index.split(",")]
    _log_to_stderr(packed=len(indices) > 1)
    out = Path(args.out)
    scenario = parse_scenario(json.loads((out / "scenario.json").read_text()), name="worker")
    plan = make_plan(scenario, [int(p) for p in args.ports.split(",")])
    control = Control(out / "control")
    honest_rounds = HonestRounds(out, plan)  # one reader for the process's Sybils
    peers = [
        WorkerPeer(out, plan, i, t0=args.t0, control=control, mark=mark, honest_rounds=honest_rounds)
        for i in indices
    ]
    mark("setup")

    if any(plan.peers[i].join_round > 0 for i in indices):
        # a late Sybil must come online at its round, not seconds later: import libp2p now (measured: ~5 s
        # of a blocked event loop when imported at the join on a loaded 2-core machine)
        import p2pfl.transport.libp2p  # noqa: F401

    async def lag_monitor() -> None:
        """Diagnosis (P2PFL_SIM_LOG=DEBUG): how late the event loop wakes a 0.1 s sleeper, worst per 5 s."""
        worst, since = 0.0, trio.current_time()
        while True:
            t = trio.current_time()
            await trio.sleep(0.1)
            worst = max(worst, trio.current_time() - t - 0.1)
            if trio.current_time() - since >= 5.0:
                logging.getLogger("p2pfl.sim").debug("event loop lag: worst %.3f s", worst)
                worst, since = 0.0, trio.current_time()

    async def stop_watchdog() -> None:
        """A worker still alive 10 s after the stop signal logs what each of its tasks waits on, once."""
        with trio.move_on_after(scenario.run.time_limit_s + 300):
            await control.stop.wait()
        if not control.stop.is_set():
            return  # never told to stop (the parent is gone): nothing to explain
        await trio.sleep(10.0)
        logging.getLogger("p2pfl.sim").warning("still running 10 s after the stop signal:\n%s", task_tree())

    async def stop_on_signal(scope: trio.CancelScope) -> None:
        """Stop at once when told to: the runner checks ``all_done`` only between rounds, and a round can
        wait ``max_round_wait_s`` for neighbours that are stopping too (16 peers: 4-5 s to shut down)."""
        await control.stop.wait()
        mark("stop")
        scope.cancel()

    crashed: list[int] = []

    async def one_peer(peer: WorkerPeer) -> None:
        if not await peer.run_isolated():
            crashed.append(peer.index)

    async def main_task() -> None:
        trio.lowlevel.spawn_system_task(stop_watchdog)  # a system task: cancelled only once main_task returns
        async with trio.open_nursery() as nursery:
            await nursery.start(control.watch)
            if logging.getLogger("p2pfl.sim").isEnabledFor(logging.DEBUG):
                nursery.start_soon(lag_monitor)
            nursery.start_soon(stop_on_signal, nursery.cancel_scope)
            async with trio.open_nursery() as peers_nursery:  # every peer of this process, side by side
                for peer in peers:
                    peers_nursery.start_soon(one_peer, peer)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main_task)
    finally:
        mark("exit")
        _closing(_write_marks, peers[0].dir, what="the process's marks")  # in its first peer's directory
        for peer in peers:  # one peer's failure to write its files must not lose its process-mates' files
            _closing(peer.close, what=f"peer {peer.index}'s results")
    return 1 if crashed else 0


def _closing(step: Callable[..., None], *args: Any, what: str) -> None:
    """Run one step of a worker's exit; a failure is logged (the parent then reports that peer's missing
    files), never raised past the steps left."""
    try:
        step(*args)
    except Exception:
        logging.getLogger("p2pfl.sim").exception("could not write %s", what)


def _log_to_stderr(*, packed: bool) -> None:
    """The process's log (the parent points stderr at the first peer's ``worker.log``); with several peers
    in the process every line says whose it is."""
    fmt = "%(asctime)s %(levelname)s " + ("[peer %(peer)s] " if packed else "") + "%(name)s %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(PeerLogFilter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    # P2PFL_SIM_LOG=DEBUG (or INFO) makes p2pfl's own loggers verbose in every worker's log, for diagnosis
    level = os.environ.get("P2PFL_SIM_LOG", "WARNING").upper()
    logging.getLogger("p2pfl").setLevel(level if level in logging.getLevelNamesMapping() else "WARNING")


#: ``cpu``: each worker writes ``cpu.json`` next to its log: the process's and the event-loop thread's CPU
#: seconds when each phase ended (set-up, listening, start signal, rounds finished, stop, exit).
#: ``cprofile``: also ``profile.pstats``, a cProfile of its whole ``main`` timed in CPU seconds;
#: ``sample``: ``samples.json`` instead, a CPU-time sampling profile (:func:`_sampled`). Diagnosis
#: of where a peer process's CPU goes (docs/benchmarks.md, "32 peers: where the CPU goes").
PROFILE_ENV = "P2PFL_SIM_PROFILE"
_marks: dict[str, tuple[float, float, float]] = {}


def mark(phase: str) -> None:
    """Record (process CPU, event-loop thread CPU, wall) at the end of ``phase`` (with ``PROFILE_ENV``)."""
    if os.environ.get(PROFILE_ENV):
        _marks.setdefault(phase, (time.process_time(), time.thread_time(), time.time()))


def _write_marks(d: Path) -> None:
    if _marks:
        (d / "cpu.json").write_text(json.dumps(_marks))
        (d / "memo.json").write_text(json.dumps(_memo_use()))


def _memo_use() -> dict[str, list[int]]:
    """(hits, misses) of p2pfl's process-wide memos of pure functions: the peers of one process share them,
    so a packed process verifies a neighbour's envelope once for all its receivers there (a real peer does
    it alone); with ``PROFILE_ENV`` set, ``memo.json`` says how often (docs/benchmarks.md, "Several peers per
    process")."""
    from p2pfl import identity
    from p2pfl.wire import header

    memos = {
        "verify": identity._verified.cache_info(),
        "decode_header": header._decode_header_memo.cache_info(),
        "key_of_peer_id": identity._key_of_peer_id.cache_info(),
    }
    return {name: [info.hits, info.misses] for name, info in memos.items()}


def _sampled(argv: list[str], out_dir: Path) -> int:
    """``P2PFL_SIM_PROFILE=sample``: a CPU-time sampling profiler (``SIGPROF`` every 2 ms of process CPU;
    each sample records the event-loop thread's stack, so worker threads' CPU shows as the loop's wait).
    Far cheaper than cProfile, so time-proportional work (polling, heartbeats) is not inflated by it."""
    import collections
    import signal

    stacks: collections.Counter[str] = collections.Counter()

    def on_prof(_sig: int, frame: object) -> None:
        names = []
        f = frame
        while f is not None:
            code = f.f_code  # type: ignore[attr-defined]
            names.append(f"{code.co_filename}:{code.co_name}")
            f = f.f_back  # type: ignore[attr-defined]
        stacks[";".join(reversed(names))] += 1

    signal.signal(signal.SIGPROF, on_prof)
    signal.setitimer(signal.ITIMER_PROF, 0.002, 0.002)
    try:
        return main(argv)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        (out_dir / "samples.json").write_text(json.dumps(stacks))


def _profiled(argv: list[str], out_dir: Path) -> int:
    import cProfile

    # CPU time, not wall: the profile says where the process's CPU went (worker threads' CPU is charged to
    # what the event loop was doing meanwhile, usually waiting in epoll)
    prof = cProfile.Profile(time.process_time)
    try:
        return int(prof.runcall(main, argv))
    finally:
        prof.dump_stats(str(out_dir / "profile.pstats"))


def warm() -> None:
    """What every worker computes before it listens, computed once here: the engine's fork server imports
    this module, so each worker forked from it starts with the results (PeerConfig's TOML keys resolve every
    field's type hints: 0.3-0.8 s of CPU per worker on a loaded 2-core machine, where cached)."""
    toml_keys()


warm()


def run_forked(argv: list[str], log_path: str, env: dict[str, str], cwd: str) -> None:
    """Entry point of a worker forked from the engine's fork server (see
    :func:`p2pfl.sim.engine_libp2p.spawn_workers`): the server imported this module and libp2p once, so a
    peer starts in milliseconds instead of re-importing them (~3 s of CPU each on a loaded 2-core machine).
    Sets up what a fresh ``python -m p2pfl.sim.worker`` would have: its environment, working directory,
    stderr to ``log_path``, stdout to /dev/null, fresh random state."""
    import random

    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    random.seed()  # forked children would otherwise share the server's random state
    profile = os.environ.get(PROFILE_ENV)
    if profile in ("cprofile", "sample"):
        code = (_profiled if profile == "cprofile" else _sampled)(argv, Path(log_path).parent)
    else:
        code = main(argv)
    sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    sys.exit(main())
