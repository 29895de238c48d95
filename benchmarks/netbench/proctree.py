"""CPU seconds and peak resident memory of a process and all its descendants (Linux ``/proc``).

A sampler thread walks the tree every ``interval_s``: per process it keeps the last CPU time seen
(user + system), and it keeps the peak of the summed resident set. A process that ends between two samples
loses at most one interval of CPU; :func:`run_measured` also reads ``RUSAGE_CHILDREN`` (every waited-for
descendant) and reports the larger of the two totals.
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def parent_and_cpu(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds: user + system) of ``pid``, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _stat(pid: int) -> tuple[int, float, int] | None:
    """(parent pid, CPU seconds, resident bytes) of ``pid``, or None once it is gone."""
    st = parent_and_cpu(pid)
    try:
        rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None if st is None else (*st, rss_pages * _PAGE)


def descendants(root: int, parents: dict[int, int]) -> set[int]:
    """``root`` and every process below it, given each live process's parent pid."""
    tree = {root}
    changed = True
    while changed:  # bounded by the process count: each pass adds at least one or stops
        changed = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                changed = True
    return tree


@dataclass
class Usage:
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    peak_processes: int


class TreeSampler:
    def __init__(self, root: int, interval_s: float = 0.2) -> None:
        self.root = root
        self.interval_s = interval_s
        self.cpu: dict[int, float] = {}
        self.peak_rss = 0
        self.peak_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        stats: dict[int, tuple[int, float, int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                st = _stat(int(entry))
                if st is not None:
                    stats[int(entry)] = st
        tree = descendants(self.root, {pid: st[0] for pid, st in stats.items()})
        rss = 0
        procs = 0
        for pid in tree:
            if pid in stats:
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), stats[pid][1])
                rss += stats[pid][2]
                procs += 1
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_procs = max(self.peak_procs, procs)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu.values())


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800) -> Usage:
    """Run ``cmd`` to completion; its wall time, CPU seconds and peak RSS with all its descendants."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sampler.stop()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    waited = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited with {proc.returncode}")
    return Usage(wall, max(waited, sampler.cpu_s), sampler.peak_rss, sampler.peak_procs)
