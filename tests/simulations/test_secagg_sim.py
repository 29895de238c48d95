"""Secure aggregation in the memory engine: an 8-member group, and the scenario's [secagg] section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from p2pfl.sim.runner import run_memory, run_scenario
from p2pfl.sim.scenario import ScenarioError, parse_scenario

GROUP: dict[str, dict[str, Any]] = {
    "run": {"seed": 3, "rounds": 6, "transport": "memory", "time_limit_s": 120, "wait_fraction": 1.0},
    "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 0.5},
    "model": {"kind": "mlp", "hidden": 32, "local_steps": 10},
    "topology": {"peers": 8, "kind": "complete"},
    "secagg": {"members": 8, "threshold": 5},
}


def test_an_eight_member_group_learns_from_its_secure_mean(tmp_path: Path) -> None:
    """Every member completes every group round and ends each round on the same model (the group's mean:
    no member's own trained model is mixed or published apart from it)."""
    sc = parse_scenario(GROUP, name="secagg")
    out = trio.run(lambda: run_memory(sc, tmp_path))
    assert out.secagg is not None
    assert out.secagg["failures"] in ({}, {"closed": out.secagg["failures"].get("closed", 0)})
    assert all(n >= 6 for n in out.secagg["rounds_completed"].values())
    assert not set(out.secagg["rejections"]) - {"late"}
    vectors = [out.vectors[i] for i in range(8)]
    for v in vectors[1:]:
        assert np.allclose(v[:6], vectors[0][:6], atol=1e-6)
    assert min(p["final_accuracy"] for p in out.peers) >= 0.8


def test_the_report_carries_the_group_summary(tmp_path: Path) -> None:
    sc = parse_scenario({**GROUP, "run": {**GROUP["run"], "rounds": 2}}, name="secagg")
    results = run_scenario(sc, tmp_path, quiet=True, plots=False)
    assert results["secagg"]["members"] == 8 and results["secagg"]["threshold"] == 5
    assert results["scenario"]["secagg"]["members"] == list(range(8))


@pytest.mark.parametrize(
    ("table", "run", "key"),
    [
        ({"members": 9}, {}, "members"),
        ({"members": [0, 0, 1]}, {}, "members"),
        ({"members": 8, "threshold": 4}, {}, "threshold"),
        ({"members": 8, "bound": 1e9}, {}, "bound"),
        ({"members": 8, "colour": 1}, {}, "colour"),
        ({"members": 8, "outsider_share_cap": 1.5}, {}, "outsider_share_cap"),
    ],
)
def test_bad_secagg_sections_are_refused_naming_the_key(
    table: dict[str, Any], run: dict[str, Any], key: str
) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario({**GROUP, "run": {**GROUP["run"], **run}, "secagg": table})
    assert key in str(info.value)


def test_outsiders_cap_the_groups_share_and_members_join_it() -> None:
    from p2pfl.identity import Identity
    from p2pfl.peer import Peer, PeerConfig
    from p2pfl.sim.secagg_sim import SecAggHub, SecAggSpec
    from p2pfl.transport.memory import MemoryNetwork

    from ..test_peer_round import ScriptedLearner

    ids = [Identity(bytes([i + 1]) * 32) for i in range(3)]
    hub = SecAggHub(SecAggSpec((0, 1), (("threshold", 2),), 0.3), [i.peer_id for i in ids], "net")
    net = MemoryNetwork()
    peers = [
        Peer(
            PeerConfig(network_id="net"),
            ScriptedLearner([]),
            i,
            transport=lambda j: net.open(network_id="net"),
        )
        for i in ids
    ]
    for p in peers:
        hub.bind(p)
    assert peers[0].secagg is not None and peers[1].secagg is not None and peers[2].secagg is None
    assert peers[2].engine.groups == {ids[0].peer_id: "secagg", ids[1].peer_id: "secagg"}
    assert peers[2].engine.group_caps == {"secagg": 0.3}
    assert not peers[0].engine.group_caps


def test_a_libp2p_scenario_gives_its_members_the_group_config() -> None:
    """The libp2p engine wires the group through each member's ``[secagg]`` config (its peer joins over
    /p2pfl/secagg/1 as ``p2pfl peer`` does); non-members get none."""
    from p2pfl.identity import Identity
    from p2pfl.sim.secagg_sim import member_config

    sc = parse_scenario(
        {**GROUP, "run": {**GROUP["run"], "transport": "libp2p"}, "secagg": {"members": [1, 2, 3]}}
    )
    fake = [Identity(bytes([i + 1]) * 32).peer_id for i in range(8)]
    assert member_config(sc.secagg, fake, 0) is None
    cfg = member_config(sc.secagg, fake, 2)
    assert cfg is not None and cfg.enabled and set(cfg.members) == {fake[1], fake[2], fake[3]}
    assert cfg.group_threshold == 2
