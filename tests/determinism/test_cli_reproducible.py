"""``p2pfl sim SCENARIO --reproducible``: the memory engine on a simulated clock, the same results twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from p2pfl.cli import main

TINY = """
[run]
seed = 1
rounds = 3
transport = "{transport}"
time_limit_s = 120
[data]
dataset = "synthetic"
partition = "iid"
synthetic_samples = 1600
[model]
kind = "logreg"
local_steps = 2
batch_size = 8
[topology]
peers = 8
kind = "random-regular"
degree = 4
[attack]
kind = "signflip"
fraction = 0.25
"""


def _results(out: Path) -> dict[str, Any]:
    """results.json's per-peer results and headline figures (no wall-clock figure among them)."""
    results = json.loads((out / "results.json").read_text())
    return {k: results[k] for k in ("peers", "honest_accuracy", "evictions", "bytes_per_peer_per_round")}


def test_sim_reproducible_gives_the_same_results_twice(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY.format(transport="memory"))
    for run in ("a", "b"):
        assert main(["sim", str(scenario), "--out", str(tmp_path / run), "--quiet", "--reproducible"]) == 0
    assert _results(tmp_path / "a") == _results(tmp_path / "b")
    assert all(p["rounds"] == 3 for p in _results(tmp_path / "a")["peers"] if p["honest"])


def test_sim_reproducible_refuses_the_libp2p_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY.format(transport="libp2p"))
    assert main(["sim", str(scenario), "--out", str(tmp_path / "out"), "--reproducible"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == 'error: [run] transport: a reproducible run (--reproducible) needs "memory"'
    assert not (tmp_path / "out").exists()


def test_run_scenario_reproducible_refuses_the_libp2p_engine(tmp_path: Path) -> None:
    """The Python API refuses as the CLI does, instead of running the scenario on the memory engine."""
    from p2pfl.errors import ConfigError
    from p2pfl.sim.runner import run_scenario
    from p2pfl.sim.scenario import load_scenario

    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(transport="libp2p"))
    with pytest.raises(ConfigError) as excinfo:
        run_scenario(load_scenario(str(path)), tmp_path / "out", quiet=True, reproducible=True)
    assert (excinfo.value.section, excinfo.value.key) == ("run", "transport")
    assert not (tmp_path / "out").exists()
