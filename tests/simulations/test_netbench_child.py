"""benchmarks/netbench/child.py: the measured child run bench_scale and bench_network share."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from netbench.child import BENCHMARKS, run_child

SCRIPT = """
import json, os, sys
args = sys.argv[1:]
result = args[args.index("--_result") + 1]
import netbench  # importable: the benchmarks directory is on the child's path
if "--fail" in args:
    sys.exit(3)
if "--silent" not in args:
    burn = sum(i * i for i in range(2_000_000))
    with open(result, "w") as f:
        json.dump({"args": args, "blas": os.environ.get("P2PFL_TEST_VAR"), "burn": burn > 0}, f)
"""


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "fake_bench.py"
    path.write_text(SCRIPT)
    return path


def test_run_child_returns_the_figures_and_the_trees_usage(tmp_path: Path) -> None:
    figures, usage = run_child(
        _script(tmp_path), ["--x", "1"], tmp_path / "r.json", env={"P2PFL_TEST_VAR": "7"}, timeout=120
    )
    assert figures is not None
    assert figures["args"] == ["--_result", str(tmp_path / "r.json"), "--x", "1"]
    assert figures["blas"] == "7" and figures["burn"] is True
    assert usage.cpu_s > 0 and usage.wall_s > 0 and usage.peak_rss_bytes > 0
    assert BENCHMARKS.name == "benchmarks" and (BENCHMARKS / "netbench" / "child.py").exists()


def test_run_child_without_a_result_and_a_stale_one(tmp_path: Path) -> None:
    """A child that wrote nothing gives None, even where an earlier run left a file."""
    result = tmp_path / "r.json"
    result.write_text('{"stale": true}')
    figures, _ = run_child(_script(tmp_path), ["--silent"], result, timeout=120)
    assert figures is None


def test_run_child_raises_on_a_failed_child(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited with 3"):
        run_child(_script(tmp_path), ["--fail"], tmp_path / "r.json", timeout=120)
