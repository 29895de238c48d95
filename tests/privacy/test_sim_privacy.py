"""Simulation support: the scenario's ``[privacy]`` section, and the report's epsilon over rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from p2pfl.sim.runner import run_scenario
from p2pfl.sim.scenario import ScenarioError, parse_scenario

SMALL: dict[str, Any] = {
    "run": {"seed": 1, "rounds": 4, "transport": "memory", "time_limit_s": 120},
    "data": {"dataset": "digits", "partition": "iid"},
    "model": {"kind": "logreg", "local_steps": 3},
    "topology": {"peers": 4},
}


def test_the_privacy_section_is_validated_and_plans_the_budget_over_the_run() -> None:
    sc = parse_scenario({**SMALL, "privacy": {"mode": "record", "epsilon": 3.0}})
    assert sc.privacy.config().rounds == 4  # [run] rounds
    assert sc.peer_overrides()["privacy"].mode == "record"
    # the resolved scenario is valid input again
    assert parse_scenario(sc.to_dict()).privacy.config() == sc.privacy.config()
    assert parse_scenario(SMALL).privacy.config().mode == "off"
    with pytest.raises(ScenarioError, match=r"\[privacy\] epsilon"):
        parse_scenario({**SMALL, "privacy": {"mode": "record", "epsilon": -1.0}})
    with pytest.raises(ScenarioError, match=r"\[privacy\] sigma: unknown key"):
        parse_scenario({**SMALL, "privacy": {"sigma": 1.0}})


def test_the_report_shows_epsilon_over_rounds_within_the_budget(tmp_path: Path) -> None:
    data = {
        **SMALL,
        "privacy": {"mode": "record", "epsilon": 2.0},
        "attack": {"kind": "signflip", "fraction": 0.25},
    }
    res = run_scenario(parse_scenario(data), tmp_path, quiet=True, plots=False)
    priv = res["privacy"]
    eps = priv["series"]["eps_max"]
    assert len(eps) == 4 and eps == sorted(eps)
    assert 0 < eps[0] and eps[-1] <= 2.0
    assert priv["series"]["published"] == [3, 3, 3, 3]  # the 3 honest peers; the attacker runs without DP
    assert "## Differential privacy" in (tmp_path / "report.md").read_text()
