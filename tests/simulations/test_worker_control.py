"""The libp2p worker's control files as events (simulations/worker.py ``Control``): the parent's wake-up
signal makes a worker look at once; without one it still looks every ``CONTROL_POLL_S``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pfl.sim import worker

pytestmark = pytest.mark.skipif(worker.WAKE_SIGNAL is None, reason="no SIGUSR1 on this platform")


async def test_a_wake_up_makes_the_worker_look_at_the_files_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "CONTROL_POLL_S", 3600.0)  # only the signal can make it look in time
    control = worker.Control(tmp_path)
    assert worker.WAKE_SIGNAL is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(control.watch)
        assert not control.go.is_set()
        (tmp_path / "go").touch()
        os.kill(os.getpid(), worker.WAKE_SIGNAL)
        with trio.fail_after(30):
            await control.go.wait()
        assert not control.stop.is_set()
        (tmp_path / "stop").touch()
        os.kill(os.getpid(), worker.WAKE_SIGNAL)
        with trio.fail_after(30):
            await control.stop.wait()
    # leaving the nursery: the watcher ended by itself once told to stop


def test_files_created_before_listening_and_without_a_wake_up_are_seen(tmp_path: Path) -> None:
    """A ``go`` already there is seen at the first look; a ``stop`` without a signal within one poll."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    (tmp_path / "go").touch()

    async def run() -> float:
        control = worker.Control(tmp_path)
        async with trio.open_nursery() as nursery:
            await nursery.start(control.watch)
            assert control.go.is_set()
            (tmp_path / "stop").touch()  # no wake-up signal
            start = trio.current_time()
            await control.stop.wait()
            return trio.current_time() - start

    waited = trio.run(run, clock=clock)
    assert waited <= worker.CONTROL_POLL_S + 1e-6
