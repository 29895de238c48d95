"""One peer inside a libp2p worker process (:mod:`p2pfl.sim.worker`), which runs one or several of them.

Everything here is the peer's own: its libp2p host (keys, TCP port), its :class:`PeerRunner`, its state
directory ``DIR/peers/I/`` and the files the parent reads there (``online``, ``status.json``, ``finished``,
``result.json``, ``vectors.npy``, ``crashed``). What the peers of one process share is read-only: the
scenario, the plan, the parent's control files (:class:`p2pfl.sim.worker.Control`) and the process itself.

A peer that raises ends alone (:meth:`WorkerPeer.run_isolated`): its process-mates keep running, as they
would in processes of their own, and the crash is not silent: the traceback goes to the process's log
under the peer's index and to ``crashed`` in its directory, ``result.json`` carries ``error``, and the
parent stops the run with the traceback when an honest peer crashed before it finished its rounds
(``engine_libp2p.check_alive``; a crashed attacker is reported in its result).
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import logging
import math
import shutil
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from p2pfl.fsutil import atomic_write
from p2pfl.peer_status import leaf_error

from .engine_libp2p import CRASHED, libp2p_addr
from .runner import FINAL_CHECKPOINT, PeerRunner, load_split
from .scenario import SimulationError

if TYPE_CHECKING:
    from .plan import Plan
    from .worker import Control

#: the index of the peer whose task (and the tasks it started) is running: the log lines of a process with
#: several peers say whose they are (:class:`PeerLogFilter`)
CURRENT_PEER: contextvars.ContextVar[str] = contextvars.ContextVar("p2pfl_sim_peer", default="-")


class PeerLogFilter(logging.Filter):
    """Adds ``peer`` (the running peer's index, ``-`` outside any peer) to every record of the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.peer = CURRENT_PEER.get()
        return True


class HonestRounds:
    """The fewest rounds any honest peer reports in its ``status.json``, read at most once per ``every_s``
    (the clock's seconds) however many callers ask: a Sybil joins at an honest round it learns here, and
    the Sybils of one worker process share one reader (each reading every honest peer's file twice a
    second multiplied the reads by the number of Sybils in the process)."""

    def __init__(self, out: Path, plan: Plan, *, every_s: float = 0.5) -> None:
        self._dirs = [out / "peers" / str(i) for i in plan.honest]
        self._every_s = every_s
        self._at = -math.inf
        self._round = 0

    def __call__(self) -> int:
        now = trio.current_time()
        if now - self._at >= self._every_s:
            self._at = now
            rounds = []
            for hd in self._dirs:
                try:
                    rounds.append(int(json.loads((hd / "status.json").read_text()).get("round", 0)))
                except (OSError, ValueError, AttributeError, TypeError, OverflowError):
                    rounds.append(0)
            self._round = min(rounds, default=0)
        return self._round


class WorkerPeer:
    """One peer of a worker process: its runner, transport factory and the files it shares with the parent."""

    def __init__(
        self,
        out: Path,
        plan: Plan,
        index: int,
        *,
        t0: float,
        control: Control,
        mark: Callable[[str], None],
        honest_rounds: HonestRounds | None = None,
    ) -> None:
        self.out, self.plan, self.index, self.control, self._mark = out, plan, index, control, mark
        self.scenario = plan.scenario
        self.me = plan.peers[index]
        self.dir = out / "peers" / str(index)
        self._honest_round = honest_rounds or HonestRounds(out, plan)
        self.runner = PeerRunner(
            plan=plan,
            me=self.me,
            split=load_split(out / "data.npz", index),
            transport=self._factory,
            addr_of=lambda j: libp2p_addr(plan, j),
            state_dir=self.dir,
            t0=t0,
            keep_vectors=self.me.honest,
            listen=f"/ip4/127.0.0.1/tcp/{self.me.port}",
            status_interval_s=1.0,
            honest_round=self._honest_round if self.scenario.sybil.count else None,
        )

    async def _gate(self) -> None:
        """Say this peer listens (``online``), then wait for the start signal (every peer listens)."""
        self._mark("listening")
        (self.dir / "online").touch()
        with trio.move_on_after(self.scenario.run.time_limit_s):
            await self.control.go.wait()
            self._mark("go")
            return
        raise SimulationError("no start signal from the parent")

    @asynccontextmanager
    async def _factory(self, identity: object) -> AsyncIterator[object]:
        """The peer's libp2p transport, listening before the peer dials anyone: the start gate is passed
        here, between listening and the peer's dials to its static peers. Dialled earlier, a neighbour not
        listening yet cost the swarm's retries (~0.7 s) before this peer said it was online."""
        from p2pfl.transport.libp2p import Libp2pConfig, Libp2pTransport

        lib = Libp2pConfig()
        members = self.scenario.secagg.members
        if self.me.index in members:  # a group member takes the group's messages (docs/secagg.md)
            from p2pfl.secagg.channel import message_cap

            dim = sum(int(v.size) for v in self.runner.learner.get_params().values())
            cap = message_cap(len(members), dim)
            lib = dataclasses.replace(lib, max_request_bytes=max(lib.max_request_bytes, cap))
        async with Libp2pTransport.open(
            seed=self.me.seed,
            network_id=self.scenario.run.network_id,
            listen=f"/ip4/127.0.0.1/tcp/{self.me.port}",
            config=lib,
        ) as transport:
            if not self.control.go.is_set():
                await self._gate()
            yield transport

    async def _go(self) -> None:
        if not self.control.go.is_set():  # a peer that listens before its first round (a late Sybil)
            await self._gate()

    def _finished(self, r: PeerRunner) -> None:
        # the checkpoint of the round just completed (written before publishing) is the model to score
        shutil.copyfile(self.dir / "checkpoint.p2ck", self.dir / FINAL_CHECKPOINT)
        atomic_write(self.dir / "result.json", json.dumps(r.result()).encode())
        self._mark("finished")
        (self.dir / "finished").touch()

    async def run(self) -> None:
        """The peer's rounds until the parent's stop signal (or its runner ends: a crash attacker)."""
        await self.runner.run(self._go, self.control.stop.is_set, self._finished)

    async def run_isolated(self) -> bool:
        """:meth:`run`, with a crash kept to this peer (module docstring). False: it crashed."""
        CURRENT_PEER.set(str(self.index))
        try:
            await self.run()
        except Exception as exc:  # any crash of this peer's code ends this peer only
            logging.getLogger("p2pfl.sim").exception("peer %d crashed", self.index)
            leaf = leaf_error(exc)  # a nursery wraps the crash in groups: name the exception itself
            self._error = f"{type(leaf).__name__}: {leaf}"
            atomic_write(self.dir / CRASHED, traceback.format_exc().encode())
            return False
        return True

    def close(self) -> None:
        """Write what the parent reads at the end (``vectors.npy``; ``result.json`` if not frozen yet)."""
        if self.runner.vectors:
            np.save(self.dir / "vectors.npy", np.stack(self.runner.vectors))
        error = getattr(self, "_error", None)
        if error is not None or not (self.dir / "result.json").exists():
            result: dict[str, Any] = self.runner.result()
            if error is not None:
                result["error"] = error
            atomic_write(self.dir / "result.json", json.dumps(result).encode())
