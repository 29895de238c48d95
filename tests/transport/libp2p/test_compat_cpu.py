"""compat_cpu: py-libp2p's task-parent lookup without walking the task tree, and gossipsub's per-RPC peer
record reused for a second by hosts that strip it. Each gives the library's own answer."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from libp2p.tools.anyio_service import Service, background_trio_service
from libp2p.tools.anyio_service.trio_tasks import FunctionTask

from p2pfl.transport.libp2p import compat_cpu


class _Tree(Service):
    """Spawns a small task tree (nested, daemon and finished tasks) and, in every task, asks both lookups
    for the current task's parent."""

    def __init__(self, *, compare: bool = True) -> None:
        self.compare = compare
        self.answers: list[tuple[object, object]] = []

    def _both(self) -> None:
        me = trio.lowlevel.current_task()
        mine = self.manager._find_parent_task(me)  # type: ignore[attr-defined]
        library = compat_cpu.original_find_parent_task(self.manager, me) if self.compare else mine  # type: ignore[arg-type]
        self.answers.append((mine, library))

    async def _leaf(self) -> None:
        self._both()
        await trio.sleep(0)
        self._both()

    async def _branch(self, depth: int) -> None:
        self._both()
        if depth:
            for _ in range(2):
                self.manager.run_task(self._branch, depth - 1)
        self.manager.run_task(self._leaf)
        await trio.sleep(0.01)
        self._both()

    async def _daemon(self) -> None:
        self.manager.run_task(self._leaf)
        self._both()
        await trio.sleep_forever()  # a daemon that returns is an error: the service ends it

    async def run(self) -> None:
        self._both()
        self.manager.run_task(self._branch, 2)
        self.manager.run_daemon_task(self._daemon)
        await trio.sleep(0.1)
        self._both()


async def test_the_parent_lookup_gives_the_library_answer_for_every_task_in_a_tree() -> None:
    tree = _Tree()
    async with background_trio_service(tree):
        await trio.sleep(0.3)  # every non-daemon task is done by then; leaving cancels the daemon
    assert len(tree.answers) >= 20
    assert all(mine is library for mine, library in tree.answers)
    assert any(isinstance(mine, FunctionTask) for mine, _ in tree.answers)  # not all roots


async def test_spawning_a_task_does_not_walk_the_task_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library walked every task of the manager for each spawn (one per pubsub message received)."""

    def walk(*tasks: Any) -> Any:
        raise AssertionError("the task tree was walked")

    tree = _Tree(compare=False)
    monkeypatch.setattr(FunctionTask, "iterate_tasks", classmethod(lambda cls, *t: walk(*t)))
    async with background_trio_service(tree):
        await trio.sleep(0.3)
    assert len(tree.answers) >= 20


def test_a_host_that_strips_records_reuses_its_record_for_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def library(host: object) -> tuple[bytes, bool]:
        calls.append(host)
        return b"record-%d" % len(calls), True

    now = [100.0]
    monkeypatch.setattr(compat_cpu, "_env_to_send_in_rpc", library)
    monkeypatch.setattr(compat_cpu.time, "monotonic", lambda: now[0])

    class Host:
        pass

    keeps, strips = Host(), Host()
    compat_cpu.records_stripped(strips)
    for _ in range(3):
        assert compat_cpu._env_to_send(keeps)[0] == b"record-%d" % len(calls)
    assert len(calls) == 3  # a host that sends its records asks the library every time
    first = compat_cpu._env_to_send(strips)
    assert first == (b"record-4", True) and len(calls) == 4
    now[0] += compat_cpu.PEER_RECORD_TTL_S / 2
    assert compat_cpu._env_to_send(strips) == (b"record-4", False) and len(calls) == 4
    now[0] += compat_cpu.PEER_RECORD_TTL_S
    assert compat_cpu._env_to_send(strips)[0] == b"record-5" and len(calls) == 5


def test_gossipsub_asks_through_the_shortcut() -> None:
    import libp2p.pubsub.gossipsub as gossipsub_module

    assert gossipsub_module.env_to_send_in_RPC is compat_cpu._env_to_send
