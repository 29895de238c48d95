"""A libp2p run's timeline: the engine's stage marks (``timing.json``) and benchmarks/netbench/timeline.py,
which lines them up with the workers' phase marks and round traces."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from p2pfl.sim.runner import run_scenario

from .test_engines import scenario

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from netbench import timeline

#: the engine's stage marks, in the order a run passes them
ENGINE_STAGES = ["called", "fork_server", "data", "spawned", "go", "finished", "stop", "exited", "evaluated"]


def _kept_run(root: Path, launched: float) -> Path:
    """A kept bench_network run of two peers, as the benchmark and the engine leave it."""
    figures = {"launched_at": launched, "child_started_at": launched + 0.1, "returned_at": launched + 5.0}
    (root / "p2pfl.json").write_text(json.dumps({**figures, "wall_s": 5.5}))
    run = root / "p2pfl"
    t0 = launched + 1.0
    marks = {name: t0 + k * 0.5 for k, name in enumerate(ENGINE_STAGES)}
    (run / "peers").mkdir(parents=True)
    (run / "timing.json").write_text(json.dumps({"online_s": 1.0, "shutdown_s": 0.5, "marks": marks}))
    for i, late in enumerate((0.0, 0.2)):
        d = run / "peers" / str(i)
        d.mkdir()
        phases = {"main": t0 + 0.2 + late, "listening": t0 + 0.4 + late, "go": t0 + 1.6}
        (d / "cpu.json").write_text(json.dumps({k: [0.01, 0.01, v] for k, v in phases.items()}))
        trace = [{"round": r, "t": 2.0 + r * 0.3 + late, "round_s": 0.2} for r in (1, 2)]
        (d / "result.json").write_text(json.dumps({"trace": trace}))
    return root


def test_timeline_lines_up_the_marks_after_the_launch(tmp_path: Path) -> None:
    rows = dict(timeline.rows(_kept_run(tmp_path, launched=1000.0)))
    assert rows["child started"] == pytest.approx([0.1])
    assert rows["engine called"] == pytest.approx([1.0])
    assert rows["go"] == pytest.approx([3.0])  # the fifth engine mark, 0.5 s apart
    assert rows["worker main"] == pytest.approx([1.2, 1.4])  # one per worker, sorted
    # a round starts where its trace row ends minus its duration, on the engine's clock (t0 = called)
    assert rows["round 1 starts"] == pytest.approx([3.1, 3.3])
    assert rows["round 2 ends"] == pytest.approx([3.6, 3.8])
    assert rows["child exited"] == pytest.approx([5.5])
    order = [stage for stage, _ in timeline.rows(tmp_path)]
    assert order.index("worker listening") < order.index("go") < order.index("round 1 starts")
    assert order.index("round 2 ends") < order.index("stop") < order.index("child exited")
    assert "| round 1 starts | 3.10 | 3.20 | 3.30 | 2 |" in timeline.render(tmp_path)


@pytest.mark.slow
def test_engine_marks_its_stages_in_order_and_stops_after_the_last_finished_peer(tmp_path: Path) -> None:
    sc = scenario(run={"rounds": 2, "transport": "libp2p", "time_limit_s": 300}, topology={"peers": 3})
    out = run_scenario(sc, tmp_path, quiet=True, plots=False)
    assert not out["timed_out"]
    marks = json.loads((tmp_path / "timing.json").read_text())["marks"]
    times = [marks[name] for name in ENGINE_STAGES]
    assert times == sorted(times), marks
    last_finished = max((tmp_path / "peers" / str(i) / "finished").stat().st_mtime for i in range(3))
    assert marks["finished"] >= last_finished - 0.01  # file times may be rounded by the file system


def test_load_table_gives_each_stage_its_cpu_and_runnable_threads(tmp_path: Path) -> None:
    run = _kept_run(tmp_path, launched=1000.0)
    for i in range(2):  # the marks the stage table ends on: the workers' last rounds
        d = run / "p2pfl" / "peers" / str(i)
        marks = json.loads((d / "cpu.json").read_text())
        (d / "cpu.json").write_text(json.dumps({**marks, "finished": [0.2, 0.2, 1000.0 + 3.9]}))
    # one sample every 0.1 s: the tree burns 0.05 CPU s per sample, with 1 runnable thread before the
    # engine is called (t = 1.0) and 8 after
    load = [[1000.0 + k / 10, 1 if k < 10 else 8, k * 0.05] for k in range(60)]
    (run / "load.json").write_text(json.dumps(load))
    table = {label.split(" (")[0]: rest for label, *rest in timeline.load_table(run, load)}
    seconds, cpu, runnable = table["the engine is called"]
    assert seconds == pytest.approx(1.0) and cpu == pytest.approx(0.5) and runnable == pytest.approx(1.0)
    seconds, cpu, runnable = table["the first worker is forked"]  # 1.0 -> 1.2
    assert seconds == pytest.approx(0.2) and cpu == pytest.approx(0.1) and runnable == pytest.approx(8.0)
    assert "| the child has exited | 1.00 | 0.50 | 8.0 |" in timeline.render(run)  # exited 4.5 -> 5.5


def test_treeload_samples_a_commands_tree(tmp_path: Path) -> None:
    from netbench import treeload

    out = tmp_path / "load.json"
    burn = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'sum(range(30_000_000))'])"
    assert treeload.main([str(out), "--", sys.executable, "-c", burn]) == 0
    series = json.loads(out.read_text())
    assert len(series) >= 2
    cpus = [cpu for _, _, cpu in series]
    assert cpus == sorted(cpus) and cpus[-1] > 0  # the grandchild's CPU counts: the tree, not one process
    assert max(runnable for _, runnable, _ in series) >= 1


def test_the_fork_servers_imports_leave_out_pytest() -> None:
    """The fork server's imports delay every worker's start (the child waits for them with a core idle):
    ``trio.testing`` (which imports pytest, ~0.07 s) is imported only where a MockClock is made."""
    import subprocess

    from p2pfl.sim.engine_libp2p import PRELOAD

    code = f"import sys\nfor m in {PRELOAD!r}: __import__(m)\nprint('pytest' in sys.modules)"
    run = [sys.executable, "-c", code]
    out = subprocess.run(run, check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
