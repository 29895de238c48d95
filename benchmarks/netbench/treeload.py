"""How busy a command's process tree keeps the machine, over time (Linux ``/proc``).

    python benchmarks/netbench/treeload.py DIR/load.json -- python benchmarks/bench_network.py --peers 32 \\
        --keep DIR
    python benchmarks/netbench/timeline.py DIR      # then adds CPU seconds and runnable threads per stage

Every ``interval_s`` (20 ms) it records the tree's CPU seconds so far and how many of its threads are
runnable. On a 2-core machine a stage with fewer than 2 runnable threads leaves a core idle (on an idle
machine): the run waits on latency or on one serial step there; a stage with many is CPU-bound, and only less
CPU shortens it (docs/benchmarks.md, "32 peers: the critical path"). A process that ends between two samples
loses at most one interval of CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, when run as a script
from netbench.proctree import descendants, parent_and_cpu


def _runnable(pid: int) -> int:
    """How many of ``pid``'s threads are runnable (state R)."""
    n = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            n += raw[raw.rfind(")") + 2] == "R"
    except OSError:
        pass
    return n


def sample(root: int, cpu: dict[int, float]) -> tuple[int, float]:
    """(runnable threads, CPU seconds so far) of ``root``'s tree; ``cpu`` keeps each process's last CPU
    time, so a process that exited still counts."""
    procs = {
        int(e): st for e in os.listdir("/proc") if e.isdigit() and (st := parent_and_cpu(int(e))) is not None
    }
    tree = descendants(root, {pid: st[0] for pid, st in procs.items()})
    runnable = 0
    for pid in tree:
        if pid in procs:
            cpu[pid] = max(cpu.get(pid, 0.0), procs[pid][1])
            runnable += _runnable(pid)
    return runnable, sum(cpu.values())


def run(cmd: list[str], out: Path, interval_s: float = 0.02) -> int:
    """Run ``cmd``, sampling its tree until it exits; write ``[[time, runnable, cpu_s], ...]`` to ``out``."""
    proc = subprocess.Popen(cmd)
    cpu: dict[int, float] = {}
    series: list[tuple[float, int, float]] = []
    while proc.poll() is None:
        t = time.time()
        series.append((t, *sample(proc.pid, cpu)))
        time.sleep(max(0.0, interval_s - (time.time() - t)))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(series))
    return proc.returncode


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    return run(argv[2:], Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
