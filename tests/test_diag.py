"""The task tree a stuck process logs: which task waits where."""

from __future__ import annotations

import trio

from p2pfl.diag import task_tree


async def test_task_tree_names_each_live_task_and_the_function_it_waits_in() -> None:
    async def waits_for_an_event(event: trio.Event) -> None:
        await event.wait()

    event = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waits_for_an_event, event, name="stuck-child")
        await trio.sleep(0.01)
        tree = task_tree().splitlines()
        event.set()
    child = next(i for i, line in enumerate(tree) if line.strip() == "task stuck-child")
    frame = next(i for i, line in enumerate(tree) if "test_task_tree_names_each_live_task" in line)
    parent = max(i for i in range(frame) if tree[i].lstrip().startswith("task "))  # the test's own task

    def indent(line: str) -> int:
        return len(line) - len(line.lstrip())

    assert parent < child
    assert indent(tree[child]) > indent(tree[parent])  # nested under the task whose nursery started it
    assert any("in waits_for_an_event" in line for line in tree[child + 1 :])
    assert "task stuck-child" not in task_tree()  # finished tasks are gone
