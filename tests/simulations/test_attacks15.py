"""Issue 15's simulated attacks: what each wrapper publishes (no peers), then a small memory run each."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from p2pfl.identity import Identity
from p2pfl.learner import Dataset, NumpySoftmaxLearner
from p2pfl.protocol import GossipEngine
from p2pfl.protocol.config import ProtocolConfig
from p2pfl.sim.attacks import Behaviour, Extreme, HonestThenAttack, LabelPerm, class_cycle
from p2pfl.sim.protocol_attacks import (
    FLOOD_SEQ_GAP,
    ProtocolAttack,
    flood_envelopes,
    send_to,
    twin_envelope,
)
from p2pfl.sim.runner import load_splits, make_plan, run_scenario
from p2pfl.sim.scenario import AttackSpec, ScenarioError, parse_scenario
from p2pfl.transport.memory import MemoryNetwork
from p2pfl.wire import open_envelope

from .test_engines import scenario


def _learner(seed: int = 0) -> NumpySoftmaxLearner:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    y = (np.arange(60) % 4).astype(np.int64)
    return NumpySoftmaxLearner(Dataset(x, y), Dataset(x[:20], y[:20]), 4, hidden=0, lr=0.1, seed=seed)


def _engine(seed: int) -> GossipEngine:
    params = {"w": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float32)}
    return GossipEngine(Identity(bytes([seed]) * 32), ProtocolConfig(network_id="sim"), params)


# ------------------------------------------------------------------------------------ learner wrappers


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_class_cycle_moves_every_label(classes: int) -> None:
    perm = class_cycle(classes, seed=7)
    assert sorted(perm.tolist()) == list(range(classes))
    assert all(perm[c] != c for c in range(classes))
    assert np.array_equal(perm, class_cycle(classes, seed=7))  # colluders share it


def test_labelperm_trains_on_permuted_labels() -> None:
    inner = _learner()
    y = inner.train_data.y.copy()
    LabelPerm(inner, perm_seed=3)
    assert np.array_equal(inner.train_data.y, class_cycle(4, 3)[y])
    assert not np.any(inner.train_data.y == y)


def _round(w: Any) -> dict[str, np.ndarray]:
    w.set_params(w.inner.get_params())
    w.train(2)
    return w.get_params()  # type: ignore[no-any-return]


def test_honest_then_attack_is_honest_for_k_rounds_then_flips() -> None:
    inner = _learner()
    w = HonestThenAttack(inner, honest_rounds=2, then="signflip", scale=4.0)
    for _ in range(2):
        start = inner.get_params()
        out = _round(w)
        trained = inner.get_params()
        assert all(np.array_equal(out[k], trained[k]) for k in out)  # honest: publishes what it trained
        assert not all(np.array_equal(out[k], start[k]) for k in out)
    start = {k: v.copy() for k, v in inner.get_params().items()}
    out = _round(w)
    trained = inner.get_params()
    for k in out:
        np.testing.assert_allclose(out[k], start[k] - 4.0 * (trained[k] - start[k]), rtol=1e-5, atol=1e-6)
    assert w.attacking


def test_honest_then_attack_alie_uses_the_neighbours_view() -> None:
    inner = _learner()
    w = HonestThenAttack(inner, honest_rounds=0, then="alie", z=1.0)
    models = [{k: np.full_like(v, float(i)) for k, v in inner.get_params().items()} for i in range(3)]
    w.view = lambda: models
    out = _round(w)
    expected = np.mean([0.0, 1.0, 2.0]) - np.std([0.0, 1.0, 2.0])
    assert all(np.allclose(v, expected) for v in out.values())


def test_extreme_publishes_finite_huge_values() -> None:
    w = Extreme(_learner(), value=-1e38, seed=1)
    out = _round(w)
    for v in out.values():
        assert v.dtype == np.float32 and np.all(np.isfinite(v))
        assert np.all(v < -0.99e38) and np.all(v > -1.01e38)


def test_behaviour_kinds() -> None:
    for kind in ("labelperm", "honest_then_attack", "extreme"):
        assert Behaviour(AttackSpec(kind=kind)).poisons_model
    for kind in ("equivocate", "slow", "flood"):
        b = Behaviour(AttackSpec(kind=kind))
        assert not b.poisons_model and b.protocol is not None


# ----------------------------------------------------------------------------------- protocol attacks


def test_twin_is_a_valid_second_version_with_the_same_number() -> None:
    sender, a, b = _engine(1), _engine(2), _engine(3)
    for receiver in (a, b):  # both hold the sender's version 0 (all engines start from zeros)
        receiver.join_from_snapshots({sender.peer_id: sender.serve_snapshot(0)}, 0.0)
    prev, prev_digest = sender.public.copy(), sender.public_digest
    trained = {k: v + 0.5 for k, v in sender.own_params().items()}
    real = sender.finish_round(trained, 1.0).actions[0].envelope  # type: ignore[attr-defined]
    header = open_envelope(real).header
    twin, pdigest, _payload = twin_envelope(sender, prev, prev_digest, sender.public.copy(), header)
    t = open_envelope(twin).header  # validly signed by the sender
    assert (t.sender, t.seq, t.base) == (header.sender, header.seq, header.base)
    assert t.result != header.result and t.payload_digest == pdigest
    a.handle_announce(real, sender.peer_id, 2.0)
    b.handle_announce(twin, sender.peer_id, 2.0)
    ra, rb = a.replicas[sender.peer_id], b.replicas[sender.peer_id]
    assert ra.seq == rb.seq == header.seq and ra.digest == header.result and rb.digest == t.result
    np.testing.assert_allclose(rb.vec, prev - (ra.vec - prev), atol=1e-6)  # the update reversed
    assert not a.rejections and not b.rejections


@pytest.mark.parametrize("sender", ["self", "random"])
def test_flood_envelopes_are_valid_header_only_announcements(sender: str) -> None:
    eng = _engine(4)
    envs = flood_envelopes(eng, 50, sender, random.Random(1))
    assert len(envs) == 50
    headers = [open_envelope(e).header for e in envs]  # each one validly signed
    assert all(open_envelope(e).payload is None for e in envs)
    assert len({h.payload_digest for h in headers}) == 50
    assert all(h.arch == eng.layout.arch and h.kind == "delta" for h in headers)
    if sender == "self":
        # each a new version (one number used twice would be an equivocation, banned at once)
        assert {(h.sender, h.base) for h in headers} == {(eng.peer_id, eng.public_digest)}
        first = eng.seq + FLOOD_SEQ_GAP
        assert [h.seq for h in headers] == list(range(first, first + 50))
    else:
        assert len({h.sender for h in headers}) == 50 and eng.peer_id not in {h.sender for h in headers}


def test_send_to_reaches_only_the_chosen_neighbours() -> None:
    got: dict[str, list[bytes]] = {}

    async def main() -> None:
        net = MemoryNetwork(flood=False)
        ids = [Identity(bytes([i + 10]) * 32) for i in range(4)]
        async with (
            net.open(network_id="sim", seed=ids[0].seed) as t0,
            net.open(network_id="sim", seed=ids[1].seed) as t1,
            net.open(network_id="sim", seed=ids[2].seed) as t2,
            net.open(network_id="sim", seed=ids[3].seed) as t3,
        ):
            for t in (t1, t2, t3):
                got[t.peer_id] = []

                async def handler(_via: str, data: bytes, pid: str = t.peer_id) -> None:
                    got[pid].append(data)

                t.set_gossip_handler(handler)
                await t0.connect(f"memory/{t.peer_id}")
            await send_to(t0, [t1.peer_id, t3.peer_id], b"x")
            with trio.move_on_after(2):
                while sum(map(len, got.values())) < 2:
                    await trio.sleep(0.01)
            await trio.sleep(0.05)
            assert got == {t1.peer_id: [b"x"], t2.peer_id: [], t3.peer_id: [b"x"]}

    trio.run(main)


def test_slow_starts_a_round_at_most_every_period() -> None:
    attack = ProtocolAttack.of(AttackSpec(kind="slow", period_s=9.0), 0)
    assert attack is not None
    starts: list[float] = []

    async def main() -> None:
        for _ in range(3):
            await attack.before_round(None)
            starts.append(trio.current_time())
            await trio.sleep(1.0)  # the round itself

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [9.0, 9.0]


# ------------------------------------------------------------------------------------ scenarios, plan


def test_sybil_section_and_plan() -> None:
    with pytest.raises(ScenarioError, match=r"\[sybil\] leave_round"):
        parse_scenario({"sybil": {"count": 2, "join_round": 5, "leave_round": 5}})
    with pytest.raises(ScenarioError, match=r"\[sybil\] behaviour"):
        parse_scenario({"sybil": {"behaviour": "nice"}})
    with pytest.raises(ScenarioError, match=r"\[attack\] then"):
        parse_scenario({"attack": {"then": "ipm"}})
    sc = scenario(sybil={"count": 3, "join_round": 2, "leave_round": 4, "degree": 2}, topology={"peers": 4})
    plan, twin = make_plan(sc), make_plan(sc.replace(sybil={"count": 0}))
    assert len(plan.peers) == 7 and plan.honest == [0, 1, 2, 3]
    assert plan.peer_ids[:4] == twin.peer_ids
    for p in plan.peers[4:]:
        assert (p.kind, p.honest, p.join_round, p.leave_round) == ("labelperm", False, 2, 4)
        assert len(p.neighbours) == 2 and all(j < 4 for j in p.neighbours)
        for j in p.neighbours:
            assert p.index in plan.peers[j].neighbours
    for base, same in zip(plan.peers[:4], twin.peers, strict=True):
        assert {j for j in base.neighbours if j < 4} == set(same.neighbours)
    splits = load_splits(sc)
    assert len(splits) == 7 and splits[4].train is splits[0].train  # a copy of an honest peer's data
    sliced = load_splits(sc.replace(sybil={"data": "slice", "slice_fraction": 0.25}))
    assert len(sliced[5].train.y) == int(len(splits[1].train.y) * 0.25)


# ------------------------------------------------------------------------------ end to end (memory)

SHORT = {"rounds": 8, "time_limit_s": 120}


def _run(tmp_path: Path, *, simulated: bool = False, **sections: dict[str, Any]) -> dict[str, Any]:
    """``simulated``: on the simulated clock (p2pfl.sim.determinism), for runs that mostly wait (a slow
    attacker's period, timeouts for refused or non-finite peers): the waits take no wall time. Runs that
    mostly train stay on the real clock, where small runs train in worker threads (inline when simulated)."""
    sections["run"] = {**SHORT, **sections.get("run", {})}
    return run_scenario(scenario(**sections), tmp_path, quiet=True, plots=False, reproducible=simulated)


def test_e2e_sybils_join_late_leave_early_and_are_measured(tmp_path: Path) -> None:
    # scoring off: whether an honest peer mixes a Sybil must not depend on when it first heard it (a Sybil
    # heard within its founding rounds is a founder, a later one young and never mixed), so the shares
    # measured here are the joins and leaves alone
    r = _run(
        tmp_path,
        topology={"peers": 3},
        sybil={"count": 4, "join_round": 2, "leave_round": 6},
        scoring={"enabled": False},
    )
    a = r["attacks"]
    sybils = [p for p in r["peers"] if p["index"] >= 3]
    assert all(p["kind"] == "labelperm" and p["rounds"] >= 1 for p in sybils)
    assert all(p["rounds"] == 8 for p in r["peers"] if p["honest"])
    shares = a["series"]["attacker_share_max"]
    assert shares[0] == 0.0 and max(shares) > 0  # mixed only once they joined
    assert set(a["windows"]) == {"before", "during", "after"}
    assert set(a["attackers"]) == {"3", "4", "5", "6"}
    assert a["round_s"]["p50"] is not None and len(a["series"]["round_s_p95"]) == 8


def test_e2e_honest_then_attack_sybils(tmp_path: Path) -> None:
    r = _run(
        tmp_path,
        topology={"peers": 3},
        attack={"honest_rounds": 2},
        sybil={"count": 2, "behaviour": "honest_then_attack"},
    )
    sybils = [p for p in r["peers"] if not p["honest"]]
    assert all(p["rounds"] >= 3 for p in sybils)
    assert all(a["attack"]["rounds_trained"] >= 3 for a in r["attacks"]["attackers"].values())


def test_e2e_extreme(tmp_path: Path) -> None:
    r = _run(tmp_path, simulated=True, attack={"kind": "extreme", "fraction": 0.2})
    (att,) = r["attacks"]["attackers"].values()
    assert att["kind"] == "extreme" and att["mixed_records"] >= 0
    assert r["honest_accuracy"]["min"] > 0.5  # finite -1e38 models never turned an honest model non-finite


def test_e2e_equivocate(tmp_path: Path) -> None:
    r = _run(tmp_path, attack={"kind": "equivocate", "fraction": 0.2, "start_round": 2})
    (att,) = r["attacks"]["attackers"].values()
    eq = att["attack"]["equivocations"]
    # every version from its round 2 on went out twice, until every honest peer banned it: at least two
    # (banned in round 4 in the old order, in round 3 with wait_before_mix; it asked for three)
    assert eq and eq[0] == 2 and eq == list(range(2, 2 + len(eq))) and len(eq) >= 2
    assert att["banned_by"] == 4 and eq[-1] >= min(att["banned_rounds"])
    bad = next(p for p in r["peers"] if not p["honest"])
    assert bad["bad_envelopes_sent"] >= len(eq)


def test_e2e_slow(tmp_path: Path) -> None:
    r = _run(
        tmp_path, simulated=True, run={"rounds": 3}, attack={"kind": "slow", "fraction": 0.2, "period_s": 0.5}
    )
    assert all(p["rounds"] == 3 for p in r["peers"] if p["honest"])
    assert r["attacks"]["round_s"]["p95"] is not None


def test_e2e_flood(tmp_path: Path) -> None:
    r = _run(
        tmp_path,
        run={"rounds": 12},
        attack={"kind": "flood", "fraction": 0.2, "start_round": 1, "flood_count": 300},
    )
    f = r["attacks"]["flood"]
    assert f["sent"] and 0 < f["count"] <= 300  # the run may end mid-burst: what was sent is reported
    bad = next(p for p in r["peers"] if not p["honest"])
    assert bad["bad_envelopes_sent"] == f["count"]
    # the announcements reached the honest peers: refused (as replays, or fetches that found no payload)
    honest_refusals = sum(sum(p["rejected"].values()) for p in r["peers"] if p["honest"])
    assert honest_refusals > 0


def test_e2e_closed_network_refuses_the_sybils(tmp_path: Path) -> None:
    r = _run(
        tmp_path, simulated=True, topology={"peers": 3}, sybil={"count": 2, "join_round": 1, "closed": True}
    )
    a = r["attacks"]
    assert a["attacker_share_max"] == 0.0
    assert all(att["requests_served"] == 0 for att in a["attackers"].values())  # none of their bytes fetched
    assert sum(a["refusals"].values()) > 0
    assert all(p["rounds"] == 8 for p in r["peers"] if p["honest"])
