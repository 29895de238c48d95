"""The issue-16 robustness matrix: cell selection, scenarios per cell, target checks, and a CI slice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from p2pfl.sim import bench_matrix as bm
from p2pfl.sim import reference
from p2pfl.sim.scenario import Scenario, load_scenario

BASE = bm.MATRIX_BASE


def test_full_matrix_runs_each_attack_free_cell_once() -> None:
    todo = bm.cells(bm.FULL)
    assert len(todo) == len(set(todo))
    none = [c for c in todo if c.attack == "none"]
    assert len(none) == 2 * 2 * 3 * 2 and all(c.fraction == "0" for c in none)
    attacked = [c for c in todo if c.attack != "none"]
    assert len(attacked) == 2 * 2 * 3 * 2 * 7 * 2
    assert {c.attack for c in todo} == set(bm.MATRIX_ATTACKS)


def test_cell_scenarios() -> None:
    base = load_scenario(BASE)
    dumb = bm.cell_scenario(base, bm.Cell("mnist5k", "0.1", "dumbbell", "0.25", "labelflip", "median"))
    assert (dumb.data.dataset, dumb.data.alpha) == ("mnist5k", 0.1)
    assert (dumb.topology.kind, dumb.topology.peers, dumb.topology.bridges) == ("dumbbell", 20, 6)
    assert (dumb.attack.kind, dumb.attack.fraction, dumb.attack.placement) == ("labelflip", 0.25, "targeted")
    assert dumb.aggregation.rule == "median"
    clean = bm.cell_scenario(base, bm.Cell("digits", "0.3", "rr4", "0", "none", "default"))
    assert clean.attack.count(clean.topology.peers) == 0 and clean.topology.degree == 4
    assert clean.aggregation.config() == base.aggregation.config()  # "default": the base pipeline as it is
    assert clean.scoring == base.scoring


def test_an_attack_cell_on_a_base_without_attackers() -> None:
    """``--scenario clustered.toml --attack ipm``: the base has fraction 0, which a kind alone breaks."""
    base = load_scenario(BASE.parent / "clustered.toml")
    assert base.attack.fraction == 0
    sc = bm.cell_scenario(base, bm.Cell("base", "base", "rr4", "0.2", "ipm", "base"))
    assert (sc.attack.kind, sc.attack.fraction, sc.topology.degree) == ("ipm", 0.2, 4)
    assert sc.aggregation == base.aggregation and sc.data == base.data
    kept = bm.cell_scenario(base, bm.Cell("base", "base", "base", "base", "signflip", "base"))
    assert (kept.attack.kind, kept.attack.fraction) == ("signflip", 0.2)


def test_exposed_peers_are_the_honest_ones_with_a_byzantine_majority_of_neighbours() -> None:
    from p2pfl.sim.plan import make_plan

    sc = bm.cell_scenario(load_scenario(BASE), bm.Cell("digits", "0.3", "rr4", "0.25", "alie", "default"))
    plan = make_plan(sc)
    bad = {q.index for q in plan.peers if not q.honest}
    got = bm.exposed(sc)
    assert got  # this placement leaves some honest peers with 2 or 3 attackers among 4 neighbours
    for q in plan.peers:
        share = len(bad.intersection(q.neighbours)) / len(q.neighbours)
        assert (q.index in got) == (q.honest and share >= 0.5), (q.index, share)
    clean = bm.cell_scenario(load_scenario(BASE), bm.Cell("digits", "0.3", "rr4", "0", "none", "default"))
    assert bm.exposed(clean) == set()
    peers = [
        {"index": 0, "honest": True, "final_accuracy": 0.9},
        {"index": 1, "honest": True, "final_accuracy": 0.3},
        {"index": 2, "honest": False, "final_accuracy": 0.1},
    ]
    result = {
        "honest_accuracy": {"mean": 0.6, "min": 0.3},
        "peers": peers,
        "attackers": 1,
        "timed_out": False,
        "evictions": {
            "poisoning_attackers": 1,
            "attackers_evicted_by_every_honest_neighbour": 0,
            "true_positive": 0,
            "expected": 1,
            "rounds_to_evict": {"max": None},
            "false_positive": 0,
        },
    }
    row = bm.summarise(bm.Cell("digits", "0.3", "rr4", "0.25", "alie", "default"), result, 1.0, {1})
    assert (row["min"], row["min_minority"], row["exposed"]) == (0.3, 0.9, 1)


def _row(**kw: Any) -> dict[str, Any]:
    row = {
        "dataset": "digits",
        "alpha": "0.3",
        "topology": "rr6",
        "fraction": "0.2",
        "attack": "alie",
        "rule": "default",
        "mean": 0.95,
        "min": 0.91,
        "share_after_r10": 0.0,
        "false_evictions": 0,
        "seed": 1,
    }
    return {**row, **kw}


def test_misses_names_each_missed_target() -> None:
    refs = {bm.ref_key("digits", 1): 0.97, bm.ref_key("mnist5k", 1): 0.90}
    assert bm.misses(_row(), [], refs) == []
    assert bm.misses(_row(mean=0.93, min=0.80), [], refs) == ["acc94", "min90"]
    assert bm.misses(_row(share_after_r10=0.2), [], refs) == ["held"]
    assert bm.misses(_row(attack="mimic", share_after_r10=0.5), [], refs) == []  # mimic need not be held
    assert bm.misses(_row(false_evictions=1), [], refs) == ["FP"]
    clean = _row(attack="none", fraction="0", mean=0.94)
    assert bm.misses(clean, [], refs) == ["central"]
    assert bm.misses(_row(attack="none", fraction="0", mean=0.955), [], refs) == []
    skewed = _row(alpha="0.1", mean=0.80, min=0.7)
    clean01 = _row(alpha="0.1", attack="none", fraction="0", mean=0.83)
    assert bm.misses(skewed, [clean01], refs) == ["gap2"]
    assert bm.misses(skewed, [], refs) == ["gap2?"]
    assert bm.misses(_row(mean=None), [], refs) == ["failed"]


def test_gap2_compares_with_the_attack_free_row_of_the_same_seed() -> None:
    refs = {"digits": 0.97}
    skewed = _row(alpha="0.1", mean=0.80, min=0.7, seed=2)
    same_seed = _row(alpha="0.1", attack="none", fraction="0", mean=0.81, seed=2)
    other_seed = _row(alpha="0.1", attack="none", fraction="0", mean=0.90, seed=1)
    assert bm.misses(skewed, [other_seed, same_seed], refs) == []
    assert bm.misses(skewed, [other_seed], refs) == ["gap2?"]


def test_central_is_judged_against_the_reference_of_the_rows_own_seed() -> None:
    refs = {bm.ref_key("digits", 1): 0.96, bm.ref_key("digits", 2): 0.99}
    clean = _row(attack="none", fraction="0", mean=0.95)
    assert bm.misses(clean, [], refs) == []
    assert bm.misses({**clean, "seed": 2}, [], refs) == ["central"]


def test_references_use_the_base_partition_whatever_the_axes_and_each_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slice run (``--alpha 0.1 --topology dumbbell``) judges against the same reference as the full
    matrix, and ``--seed 2`` against seed 2's split, not the base seed's."""
    seen: list[tuple[float | None, int, int]] = []

    def fake(sc: Scenario) -> reference.Reference:
        seen.append((sc.data.alpha, sc.topology.peers, sc.run.seed))
        return reference.Reference(sc.data.dataset, 0.9 + sc.run.seed / 100, 0.5, 10, 5)

    monkeypatch.setattr(reference, "reference", fake)
    base = load_scenario(BASE)
    refs, lines = bm.references(base, ["digits"], [1, 2])
    assert seen == [(base.data.alpha, base.topology.peers, 1), (base.data.alpha, base.topology.peers, 2)]
    assert refs == {bm.ref_key("digits", 1): 0.91, bm.ref_key("digits", 2): 0.92}
    assert len(lines) == 4 and "| digits | 2 | 92.0 |" in lines[-1]


def test_seeds_and_simulated_clock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--seed 1,2`` gives a row per seed; ``--reproducible`` gives the same numbers for the same seed."""
    argv = ["--attack", "none", "--rule", "default", "--dataset", "digits", "--alpha", "0.3"]
    argv += ["--topology", "rr4", "--rounds", "2", "--no-reference", "--reproducible"]

    def rows(seeds: str, name: str) -> list[dict[str, Any]]:
        out = tmp_path / f"{name}.json"
        assert bm.main([*argv, "--seed", seeds, "--work", str(tmp_path / name), "--json", str(out)]) == 0
        return list(json.loads(out.read_text())["rows"])

    both = rows("1,2", "a")
    assert [r["seed"] for r in both] == [1, 2]
    assert "seed 1,2 (simulated clock)" in capsys.readouterr().out
    again = rows("2", "b")
    assert [(r["mean"], r["min"]) for r in again] == [(both[1]["mean"], both[1]["min"])]
    with pytest.raises(SystemExit):
        bm.main([*argv, "--seed", "one"])


def test_clustered_preset_is_the_measured_dumbbell_cell_with_its_four_settings() -> None:
    """scenarios/clustered.toml is what simulations/benchmarks-matrix.md measured as the preset: the matrix's
    dumbbell cell at Dirichlet 0.1 with the trusted mean, ``wait_before_mix``, ``wait_fraction = 1`` and a
    self-clip radius of 2, and nothing else changed (a drift between the file and the documented command
    would make the table lie)."""
    preset = load_scenario(BASE.parent / "clustered.toml")
    cell = bm.cell_scenario(
        load_scenario(BASE).replace(run={"seed": preset.run.seed}),
        bm.Cell("digits", "0.1", "dumbbell", "0", "none", "trusted-mean"),
    )
    measured = cell.replace(
        run={"wait_before_mix": True, "wait_fraction": 1.0}, aggregation={"self_clip_scale": 2.0}
    )
    # ``degree`` is the random-regular graphs' key, unused by the dumbbell (the base's 6 leaks into the cell)
    assert preset.replace(topology={"degree": cell.topology.degree}).to_dict() == measured.to_dict()
    assert measured.to_dict() != cell.to_dict()


def test_two_step_clustered_preset_is_clustered_toml_with_its_four_settings() -> None:
    """scenarios/clustered_two_steps.toml is what simulations/benchmarks-matrix.md measured (bridge16):
    clustered.toml with ``mix_steps = 2``, ``loss_near_score``, ``histories_from_mixes = False`` and
    persistence 3 / 5, nothing else changed."""
    two = load_scenario(BASE.parent / "clustered_two_steps.toml")
    one = load_scenario(BASE.parent / "clustered.toml")
    scoring = {
        "loss_near_score": True,
        "histories_from_mixes": False,
        "persist_soft": 3.0,
        "persist_hard": 5.0,
    }
    assert two.to_dict() == one.replace(run={"mix_steps": 2}, scoring=scoring).to_dict()


@pytest.mark.slow
def test_ci_slice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reduced slice CI runs: issue 16's headline cells (digits, Dirichlet 0.3, random 6-regular, 16
    peers, 20 % attackers, the default pipeline, 40 rounds), no attack and every attack of the matrix, on the
    simulated clock (``--reproducible``), so that a run is the same on every machine with the same packages.

    It asserts the issue's targets where this commit meets them, at the targets themselves: honest mean
    >= 94 % and minimum >= 90 % under every attack, no honest peer evicted in any cell, sign-flip,
    Gaussian and ALIE attackers held (largest share <= 0.1 after round 10: 0.00 each) and every sign-flip
    pair evicted. (Measured on this commit: 95.1-95.6 / 92.8-93.9.) Not asserted, because not met: the hold
    target for label-flip, IPM and dissensus, which keep a share of 0.14-0.20 here, about one row of seven
    (ALIE too at 25 %; simulations/benchmarks-matrix.md)."""
    out = tmp_path / "slice.json"
    argv = ["--attack", ",".join(bm.MATRIX_ATTACKS), "--rule", "default", "--dataset", "digits"]
    argv += ["--alpha", "0.3", "--topology", "rr6", "--fraction", "0.2", "--rounds", "40", "--reproducible"]
    argv += ["--work", str(tmp_path / "w"), "--json", str(out)]
    assert bm.main(argv) == 0
    assert "| digits | 0.3 | rr6 |" in capsys.readouterr().out
    got = json.loads(out.read_text())
    assert (
        got["references"][bm.ref_key("digits", 1)] >= 0.93
    )  # logistic regression / MLP on the union of the data
    rows = {r["attack"]: r for r in got["rows"]}
    assert set(rows) == set(bm.MATRIX_ATTACKS)
    for attack, r in rows.items():
        assert not r["timed_out"] and r["mean"] >= 0.94 and r["min"] >= 0.90, r
        assert r["false_evictions"] == 0, r
        assert attack == "none" or r["attackers"] == 3, r
    for attack in ("signflip", "gaussian", "alie"):
        assert rows[attack]["share_after_r10"] <= bm.HOLD_SHARE, rows[attack]
    tp, expected = rows["signflip"]["evictions"]
    assert expected == 14 and tp == expected, rows["signflip"]


def test_reference_union_holds_every_peers_examples() -> None:
    base = load_scenario(BASE)
    splits = reference.load_splits(base)
    u = reference.union(splits)
    assert len(u.train.y) == sum(len(s.train.y) + len(s.val.y) for s in splits)
    assert u.test is splits[0].test
