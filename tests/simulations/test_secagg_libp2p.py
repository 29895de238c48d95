"""Secure aggregation in the libp2p simulation engine: 8 peer processes, one group over /p2pfl/secagg/1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from p2pfl.sim.runner import FINAL_CHECKPOINT, run_scenario
from p2pfl.sim.scenario import load_scenario
from p2pfl.state import load_checkpoint

pytestmark = pytest.mark.slow

SCENARIO = Path(__file__).resolve().parents[2] / "simulations" / "scenarios" / "secagg8_libp2p.toml"


def test_an_eight_member_group_runs_over_libp2p_peer_processes(tmp_path: Path) -> None:
    """Every member completes every group round over real libp2p (bounded by the scenario's time limit),
    all members end on the same model (the group mean: only it leaves a member, and members mix nothing
    else here) within the fixed-point error, fellows send each other no gossip (the mean is already held),
    and the run learns."""
    sc = load_scenario(SCENARIO)
    results = run_scenario(sc, tmp_path, quiet=True, plots=False)
    assert not results["timed_out"]
    group = results["secagg"]
    assert group["members"] == 8 and group["threshold"] == 5
    assert set(group["failures"]) <= {"closed"}, group  # a round cut short by the stop signal only
    assert all(n >= sc.run.rounds for n in group["rounds_completed"].values()), group
    assert all(c.get("refused_not_member", 0) == 0 for c in group["channel"].values()), group
    models = []
    for i in range(8):
        d = tmp_path / "peers" / str(i)
        ckpt = load_checkpoint(d, FINAL_CHECKPOINT)
        assert ckpt is not None
        models.append(np.concatenate([ckpt.own[k].ravel() for k in sorted(ckpt.own)]))
        received = json.loads((d / "result.json").read_text())["received_by"]
        assert received.get("gossip", 0) == 0, received  # no fellow's announcement reached it
    for m in models[1:]:
        np.testing.assert_allclose(m, models[0], atol=1e-5)
    assert results["honest_accuracy"]["min"] >= 0.8, results["honest_accuracy"]
