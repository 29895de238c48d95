"""Diagnostics for a process that will not stop: what every trio task is waiting on.

A py-spy dump of an idle trio process shows only the event loop; the answer to "why does this process not
exit" is the await stack of each task still alive, which only the trio thread can read.
"""

from __future__ import annotations

import trio


def task_tree(root: trio.lowlevel.Task | None = None, *, max_frames: int = 12) -> str:
    """Every live task under ``root`` (default: the run's root task), indented by nursery, each with the
    innermost ``max_frames`` frames of its await stack (``file:line in function``); from trio's thread."""
    lines: list[str] = []

    def visit(task: trio.lowlevel.Task, depth: int) -> None:
        pad = "  " * depth
        lines.append(f"{pad}task {task.name}")
        frames = [
            f"{f.f_code.co_filename}:{lineno} in {f.f_code.co_name}" for f, lineno in task.iter_await_frames()
        ]
        for frame in frames[-max_frames:]:
            lines.append(f"{pad}    {frame}")
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                visit(child, depth + 1)

    visit(root if root is not None else trio.lowlevel.current_root_task(), 0)
    return "\n".join(lines)
