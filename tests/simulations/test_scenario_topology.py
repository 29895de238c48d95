"""Scenario validation, topologies and attack wrappers (fast, no peers)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from p2pfl.sim import topology
from p2pfl.sim.attacks import ALIE, IPM, Behaviour, LabelFlip, SignFlip
from p2pfl.sim.data import peer_splits
from p2pfl.sim.runner import build_learner, make_plan
from p2pfl.sim.scenario import AttackSpec, ScenarioError, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "simulations" / "scenarios"


def test_defaults_and_round_trip() -> None:
    sc = parse_scenario({})
    assert (sc.run.transport, sc.topology.peers, sc.attack.kind) == ("libp2p", 8, "none")
    again = parse_scenario(sc.to_dict())
    assert again.to_dict() == sc.to_dict()


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_scenarios_are_valid(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.run.rounds >= 1


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"run": {"round": 3}}, r"\[run\] round: unknown key"),
        ({"run": {"rounds": "3"}}, r"\[run\] rounds: expected int"),
        ({"run": {"transport": "tcp"}}, r"\[run\] transport: must be one of"),
        ({"data": {"alpha": 0}}, r"\[data\] alpha"),
        ({"topology": {"kind": "random-regular", "peers": 5, "degree": 3}}, r"\[topology\] degree"),
        ({"attack": {"kind": "signflip", "fraction": 0.6}}, r"\[attack\] fraction"),
        ({"attack": {"kind": "signflip", "fraction": 0.01}}, r"\[attack\] fraction"),
        ({"aggregation": {"rule": "avg"}}, r"\[aggregation\] rule"),
        ({"aggregation": {"bogus": 1}}, r"\[aggregation\] bogus: unknown key"),
        ({"scoring": {"ema": 2.0}}, r"\[scoring\] ema"),
        ({"scoring": {"mix_guard": 0}}, r"\[scoring\] mix_guard"),
        ({"scoring": {"mix_guard": "on"}}, r"\[scoring\] mix_guard"),
        ({"data": {"synthetic_samples": 5}}, r"\[data\] synthetic_samples"),
        ({"churn": {"crashes": [{"peer": 99, "round": 2}]}}, r"\[churn\] crashes\[0\].peer"),
        ({"model": {"kind": "cnn"}}, r"\[model\] kind"),
        ({"model": {"lr_decay": 0}}, r"\[model\] lr_decay"),
        ({"model": {"lr": 0.1, "lr_min": 0.2}}, r"\[model\] lr_min"),
        ({"scoring": {"drop_bad_at_once": 1}}, r"\[scoring\] drop_bad_at_once"),
        ({"nope": {}}, r"\[nope\]: unknown section"),
    ],
)
def test_errors_name_the_key(data: dict[str, dict[str, object]], match: str) -> None:
    with pytest.raises(ScenarioError, match=match):
        parse_scenario(data)


def test_bad_toml_file(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text("[run\nrounds = 1")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(p)


def test_topologies() -> None:
    rng = random.Random(0)
    g = topology.random_regular(16, 6, rng)
    assert all(len(n) == 6 for n in g) and topology.is_connected(g)
    assert all(len(n) == 2 for n in topology.ring(7))
    d = topology.dumbbell(8)
    assert len(topology.edges(d)) == 2 * 6 + 1 and topology.is_connected(d)
    ps = topology.peer_sampling(50, 2, rng)
    assert topology.is_connected(ps) and all(len(n) >= 2 for n in ps)
    assert all(i not in n for i, n in enumerate(ps))
    assert topology.place_attackers(d, 2, "targeted", rng) == {0, 7}  # the bridge ends


def test_plan_is_deterministic_and_places_attackers() -> None:
    sc = parse_scenario({"topology": {"peers": 10}, "attack": {"kind": "gaussian", "fraction": 0.2}})
    a, b = make_plan(sc), make_plan(sc)
    assert a.peer_ids == b.peer_ids and len(set(a.peer_ids)) == 10
    assert [p.kind for p in a.peers] == [p.kind for p in b.peers]
    assert sum(not p.honest for p in a.peers) == 2


def _learner() -> object:
    sc = parse_scenario({"model": {"kind": "logreg"}, "topology": {"peers": 2}})
    return build_learner(sc, peer_splits("digits", 2, seed=0)[0], 0)


def test_signflip_reverses_and_scales_the_update() -> None:
    inner = _learner()
    w = SignFlip(inner, scale=2.0)
    start = w.get_params()
    w.set_params(start)
    w.train(3)
    trained = inner.get_params()  # type: ignore[attr-defined]
    bad = w.get_params()
    for k in start:
        np.testing.assert_allclose(bad[k], start[k] - 2.0 * (trained[k] - start[k]), rtol=1e-5, atol=1e-6)


def test_alie_and_ipm_use_the_replica_view() -> None:
    models = [
        {"fc.weight": np.full((64, 10), v, np.float32), "fc.bias": np.full(10, v, np.float32)} for v in (1, 3)
    ]
    alie = ALIE(_learner(), z=1.0)
    alie.view = lambda: models
    start = alie.get_params()
    alie.set_params(start)
    alie.train(1)
    np.testing.assert_allclose(alie.get_params()["fc.bias"], np.full(10, 2.0 - 1.0))  # mean - z * std
    ipm = IPM(_learner(), epsilon=0.5)
    ipm.view = lambda: models
    ipm.set_params(start)
    ipm.train(1)
    np.testing.assert_allclose(ipm.get_params()["fc.bias"], np.full(10, -1.0))  # 0 - 0.5 * (2 - 0)


def test_labelflip_trains_on_flipped_labels() -> None:
    inner = _learner()
    y = inner.train_data.y.copy()  # type: ignore[attr-defined]
    LabelFlip(inner)
    np.testing.assert_array_equal(inner.train_data.y, 9 - y)  # type: ignore[attr-defined]


def test_partial_labelflip_flips_that_share_of_the_samples_only() -> None:
    inner = _learner()
    y = inner.train_data.y.copy()  # type: ignore[attr-defined]
    LabelFlip(inner, fraction=0.3, seed=5)
    new = inner.train_data.y  # type: ignore[attr-defined]
    moved = new != y
    flipped = np.zeros(len(y), dtype=bool)
    flipped[np.random.default_rng(5).permutation(len(y))[: round(0.3 * len(y))]] = True
    # every chosen label moves: 9 - y == y has no integer solution
    np.testing.assert_array_equal(moved, flipped)
    np.testing.assert_array_equal(new[flipped], 9 - y[flipped])
    sc = parse_scenario({"attack": {"kind": "labelflip", "fraction": 0.25, "labelflip_fraction": 0.3}})
    assert sc.attack.labelflip_fraction == 0.3
    with pytest.raises(ScenarioError, match="labelflip_fraction"):
        parse_scenario({"attack": {"kind": "labelflip", "labelflip_fraction": 0.0}})


def test_behaviour_kinds() -> None:
    assert Behaviour(AttackSpec(kind="crash", crash_round=4)).crash_round == 4
    assert Behaviour(AttackSpec(kind="signflip")).poisons_model
    assert not Behaviour(AttackSpec(kind="replay")).poisons_model


def test_mix_guard_round_trips_and_reaches_the_peer_config() -> None:
    from p2pfl.sim.runner import peer_config

    sc = parse_scenario({"scoring": {"mix_guard": 0.4}})
    assert parse_scenario(sc.to_dict()).scoring.mix_guard == 0.4
    assert peer_config(sc, state_dir=None).mix_guard_margin == 0.4
    assert peer_config(parse_scenario({}), state_dir=None).mix_guard_margin is None
