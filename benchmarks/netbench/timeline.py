"""The timeline of one kept libp2p run of bench_network: when each stage of the critical path ended.

    P2PFL_SIM_PROFILE=cpu python benchmarks/bench_network.py --peers N --keep DIR
    python benchmarks/netbench/timeline.py DIR [DIR ...]

With the run started under ``benchmarks/netbench/treeload.py DIR/load.json -- ...`` it adds, per stage of
the critical path, the CPU seconds the run's processes spent in it and how many threads were runnable.

Seconds after the benchmark launched its p2pfl child, from the figures the benchmark kept
(``DIR/p2pfl.json``), the engine's stage marks (``DIR/p2pfl/timing.json``), each worker's phase marks
(``peers/I/cpu.json``, written with ``P2PFL_SIM_PROFILE``) and each peer's round trace (``result.json``).
A stage that many workers pass is given as first / median / last: where the last lags the first while the
machine's cores idle, the run waits on latency or on one slow worker, not on CPU (docs/benchmarks.md,
"32 peers: the critical path").
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def worker_stages(run: Path, t0: float) -> dict[str, list[float]]:
    """Per stage, every worker's wall time (absolute): its phase marks and its rounds' starts and ends."""
    stages: dict[str, list[float]] = {}
    for d in sorted((run / "peers").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1):
        marks = _json(d / "cpu.json") or {}
        for phase, (_cpu, _thread, wall) in marks.items():
            stages.setdefault(f"worker {phase}", []).append(float(wall))
        res = _json(d / "result.json") or {}
        for k, row in enumerate(res.get("trace", [])):
            end = t0 + float(row["t"])
            if k == 0:
                stages.setdefault("round 1 starts", []).append(end - float(row.get("round_s", 0.0)))
            stages.setdefault(f"round {row['round']} ends", []).append(end)
    return stages


#: the order stages are printed in (workers' phases: simulations/worker.py's ``mark`` calls)
ORDER = [
    "child started",
    "engine called",
    "fork_server",
    "data",
    "worker main",
    "spawned",
    "worker setup",
    "worker listening",
    "go",
    "worker go",
    "round 1 starts",
]


def rows(run_dir: Path) -> list[tuple[str, list[float]]]:
    """(stage, times in seconds after launch: one per worker, or one for the parent's stages)."""
    figures = _json(run_dir / "p2pfl.json") or {}
    launched = float(figures["launched_at"])
    timing = _json(run_dir / "p2pfl" / "timing.json") or {}
    marks: dict[str, float] = timing.get("marks", {})
    t0 = marks.get("called", float(figures.get("called_at", launched)))
    stages: dict[str, list[float]] = {"child started": [float(figures["child_started_at"])]}
    stages["engine called"] = [t0]
    for name in ("fork_server", "data", "spawned", "go", "finished", "stop", "exited", "evaluated"):
        if name in marks:
            stages[name] = [marks[name]]
    stages.update(worker_stages(run_dir / "p2pfl", t0))
    stages["child returned"] = [float(figures["returned_at"])]
    stages["child exited"] = [launched + float(figures["wall_s"])]
    rounds = sorted(
        (k for k in stages if k.startswith("round ") and k.endswith(" ends")), key=lambda k: int(k.split()[1])
    )
    tail = ["worker finished", "finished", "stop", "worker stop", "worker exit", "exited", "evaluated"]
    order = [*ORDER, *rounds, *tail, "child returned", "child exited"]
    return [(k, sorted(t - launched for t in stages[k])) for k in order if k in stages]


#: the critical path's stages for :func:`load_table`: (what ends the stage, the stage's row in :func:`rows`,
#: its first (0) or last (-1) time)
MILESTONES = [
    ("the engine is called (child's imports and data; the fork server imports beside)", "engine called", 0),
    ("the first worker is forked (waiting for the fork server's imports)", "worker main", 0),
    ("the last worker listens (forks, set-ups)", "worker listening", -1),
    ("the start signal", "go", 0),
    ("the first peer's round 1 starts (dials, handshakes, subscriptions)", "round 1 starts", 0),
    ("the last peer's round 1 starts", "round 1 starts", -1),
    ("the last peer's last round ends", "worker finished", -1),
    ("the parent signals stop", "stop", 0),
    ("every worker has exited", "exited", 0),
    ("the child has exited", "child exited", 0),
]


def load_table(run_dir: Path, load: list[list[float]]) -> list[tuple[str, float, float, float]]:
    """Per stage of :data:`MILESTONES`: (stage, seconds, the tree's CPU seconds in it, mean runnable
    threads), from ``load``: :mod:`treeload`'s samples of the run, ``[time, runnable, cpu_s]``."""
    figures = _json(run_dir / "p2pfl.json") or {}
    launched = float(figures["launched_at"])
    samples = [(t - launched, runnable, cpu) for t, runnable, cpu in load]
    stages = dict(rows(run_dir))

    def cpu_at(x: float) -> float:
        return max((cpu for t, _, cpu in samples if t <= x), default=0.0)

    out, start = [], 0.0
    for label, stage, which in MILESTONES:
        if stage not in stages:
            continue
        end = stages[stage][which]
        busy = [runnable for t, runnable, _ in samples if start <= t < end]
        mean = statistics.fmean(busy) if busy else float("nan")
        out.append((label, end - start, cpu_at(end) - cpu_at(start), mean))
        start = end
    return out


def render(run_dir: Path) -> str:
    lines = [f"{run_dir}", "| stage | first | median | last | n |", "|---|---|---|---|---|"]
    for stage, times in rows(run_dir):
        first, mid, last = times[0], statistics.median(times), times[-1]
        lines.append(f"| {stage} | {first:.2f} | {mid:.2f} | {last:.2f} | {len(times)} |")
    load = _json(run_dir / "load.json")
    if load:
        lines += ["", "| stage (ends when ...) | s | CPU s | runnable threads |", "|---|---|---|---|"]
        for label, seconds, cpu, runnable in load_table(run_dir, load):
            lines.append(f"| {label} | {seconds:.2f} | {cpu:.2f} | {runnable:.1f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    for d in argv:
        print(render(Path(d)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
