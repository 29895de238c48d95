"""A run on the simulated clock ends in bounded wall time (p2pfl.sim.determinism.wall_limit)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pfl.sim.determinism import run_reproducible
from p2pfl.sim.runner import PeerRunner
from tests.determinism.test_reproducible import _scenario

#: how long the busy peer keeps the loop busy at most (a bound for the test on code without the wall limit)
SPIN_BUDGET_S = 30.0


def test_a_simulated_clock_run_that_cannot_finish_ends_by_its_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Peer 0 keeps the loop busy after the start signal (it never waits, as a loop of peers whose rounds
    take almost no simulated time): the mock clock never jumps, so its simulated ``time_limit_s`` never
    comes and no peer completes a round. The run must still end as timed out once ``time_limit_s`` of wall
    time has passed, stopping the busy peer, rather than run as long as the peer stays busy."""
    original = PeerRunner.run
    spin: dict[str, bool] = {}

    async def run(self: PeerRunner, go: Any, all_done: Any, on_finished: Any, task_status: Any) -> None:
        if self.me.index != 0:
            await original(self, go, all_done, on_finished, task_status=task_status)
            return

        async def busy_go() -> None:
            await go()
            end = time.monotonic() + SPIN_BUDGET_S
            while time.monotonic() < end:
                if all_done():
                    spin["stopped_by_run_end"] = True
                    return
                await trio.lowlevel.checkpoint()
            spin["stopped_by_run_end"] = False

        await original(self, busy_go, all_done, on_finished, task_status=task_status)

    monkeypatch.setattr(PeerRunner, "run", run)
    sc = _scenario(1)
    sc = dataclasses.replace(sc, run=dataclasses.replace(sc.run, time_limit_s=2.0))
    out = run_reproducible(sc, tmp_path / "run")
    assert out.timed_out
    assert spin == {"stopped_by_run_end": True}
    assert not any(p["rounds"] >= sc.run.rounds for p in out.peers if p["honest"])
