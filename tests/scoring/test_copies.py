"""Copies count once (issue 16, mimic; ``ScoringConfig.copies_ratio``, p2pfl/scoring/copies.py): mimic
attackers that copy an exposed observer's own model must not set its yardsticks three times over and get its
honest neighbour banned, while sign-flippers that publish copies of one model are still banned.

The replay follows the trace of observer 4 in digits, Dirichlet 0.1, random 6-regular, 20 % mimic, seed 2
(``python -m p2pfl.sim.evict_trace --dataset digits --alpha 0.1 --topology rr6 --fraction 0.2 --attack mimic
--rule default --seeds 2 --reproducible``): three of its six neighbours publish, from round 2 on, a copy of
its own last trained model (``r`` 0.0, loss ratio 0.7-0.9 on its data); its honest neighbours sit where
honest Dirichlet 0.1 neighbours do, at about the same distance from the centre as each other, with loss
ratios of 2-8 (peer 0), 8-27 (peer 11) and 0.3-4 (peer 15). Before the fix the spread fell to half the nearest
honest distance and the tolerance to 1.0: 11 counted every third version and was banned at round 28."""

from __future__ import annotations

import math

import numpy as np
import pytest

from p2pfl.errors import ConfigError
from p2pfl.scoring import ContributionScorer, ScoreRecord, ScoringConfig
from p2pfl.scoring.copies import copy_groups, distinct, share_copies

DIM = 20
MIMICS = ("a2", "a12", "a13")
HONEST = ("h0", "h11", "h15")
#: each honest neighbour's loss ratio on the observer's data from round 2 (the trace's, rounded)
LOSS = {"h0": 5.0, "h11": 15.0, "h15": 1.5}


def _exposed(
    cfg: ScoringConfig, rounds: int = 30, *, flip_from: int | None = None
) -> dict[str, list[ScoreRecord]]:
    """The observer's scorer fed round by round. From round 2 the mimics publish its previous trained model;
    with ``flip_from`` they publish, from that round on, one sign-flipped model all three (copies of each
    other: the attacker who knows that copies count once)."""
    rng = np.random.default_rng(4)
    dirs = {p: v / np.linalg.norm(v) for p, v in ((p, rng.normal(size=DIM)) for p in MIMICS + HONEST)}
    before = 10.0 * rng.normal(size=DIM)
    scorer = ContributionScorer(cfg)
    out: dict[str, list[ScoreRecord]] = {p: [] for p in MIMICS + HONEST}
    for t in range(1, rounds + 1):
        scorer.begin_round()
        update = rng.normal(size=DIM)
        after = before + update / np.linalg.norm(update)  # one round of training: length 1
        models = {p: after + 4.0 * dirs[p] for p in HONEST}  # honest: 4 own-update lengths out
        losses = {p: LOSS[p] if t > 1 else 4.0 for p in HONEST}
        for p in MIMICS:
            if t == 1:
                models[p], losses[p] = after + dirs[p], 3.0
            elif flip_from is not None and t >= flip_from:
                models[p], losses[p] = before - 8.0 * (after - before) - 30.0 * dirs["a2"], 60.0
            else:
                models[p], losses[p] = before.copy(), 0.8  # a copy of the own last trained model
        rows = np.stack([after, *models.values()])
        centre = np.median(rows, axis=0)  # the robust mix, held by the copies
        rec = scorer.evaluate(before, after, models, centre, losses, 1.0)
        for p, r in rec.items():
            out[p].append(r)
        before = centre
    return out


def test_an_exposed_observer_keeps_its_honest_neighbours() -> None:
    """Fails on the previous rule (``copies_ratio = 0``): the three copies make three of the observer's
    anchors, its spread and tolerance collapse and its honest neighbour ``h11`` is banned. With copies
    counted once no honest neighbour is, and no copy is either (a mimic model is an honest model)."""
    old = _exposed(ScoringConfig(copies_ratio=0.0))
    assert old["h11"][-1].status == "evicted"
    new = _exposed(ScoringConfig())
    assert all(r.status != "evicted" for p in HONEST + MIMICS for r in new[p])
    assert all(r.distance < 4.0 for p in HONEST for r in new[p][5:])


def test_sign_flippers_that_copy_each_other_are_still_banned() -> None:
    """The attacker who knows the rule: the mimics first copy the observer's own model (so that, on the old
    rule, its yardsticks collapse), then publish one sign-flipped model, the same for all three, so that they
    count once in the spread. Each copy is still scored on its own: all three are banned within
    ``evict_after`` + 2 versions of the flip, and no honest neighbour is. On the previous rule the three
    flipped copies were half the anchors, set the spread themselves and were never banned."""
    flip = 10
    old = _exposed(ScoringConfig(copies_ratio=0.0), flip_from=flip)
    assert all(r.status != "evicted" for p in MIMICS for r in old[p])
    out = _exposed(ScoringConfig(), flip_from=flip)
    for p in MIMICS:
        evicted = [i + 1 for i, r in enumerate(out[p]) if r.status == "evicted"]
        assert evicted and evicted[0] <= flip + ScoringConfig().evict_after + 2
    assert all(r.status != "evicted" for p in HONEST for r in out[p])


def test_copy_groups_link_near_identical_models_only() -> None:
    """Models within ``ratio`` times the smaller of ``scale`` and the median pairwise distance of each other
    are one group (a chain too); others are their own."""
    base = np.zeros(3)
    models = {
        "a": base,
        "b": base + np.array([0.004, 0, 0]),
        "c": base + np.array([0.008, 0, 0]),  # 0.004 from b: chained to a through b
        "d": base + np.array([10.0, 0, 0]),
        "e": base + np.array([0, 20.0, 0]),
    }
    # the median pair is ~10, so the bound is 0.005 * min(1, 10)
    assert copy_groups(models, 1.0, 0.005) == {"a": "a", "b": "a", "c": "a", "d": "d", "e": "e"}
    assert copy_groups(models, 1.0, 0.0) == {p: p for p in models}  # off
    assert copy_groups(models, 0.1, 0.005) == {p: p for p in models}  # a short own update: a tighter bound
    assert distinct(["d", "c", "a", "b"], copy_groups(models, 1.0, 0.005)) == ["d", "c"]


def test_copy_groups_bound_is_capped_by_the_median_pair_and_exact_copies_always_group() -> None:
    """A peer far from a converged neighbourhood takes long steps (own update 20): its honest neighbours,
    0.04-0.09 apart, are not copies of each other (the median pair caps the bound). Copies that are most of
    the pairs set the median pair to 0: exact copies still group, nothing else does."""
    rng = np.random.default_rng(1)
    honest = {f"h{i}": 1.0 + 0.02 * rng.normal(size=8) for i in range(4)}
    assert copy_groups(honest, 20.0, 0.01) == {p: p for p in honest}
    crowd = {f"c{i}": np.ones(8) for i in range(5)} | {"h": np.ones(8) + 1e-6}
    assert copy_groups(crowd, 1.0, 0.01) == {**{f"c{i}": "c0" for i in range(5)}, "h": "h"}


def test_share_copies_weighs_a_group_as_its_heaviest_member() -> None:
    """Three copies at weights 1, 1 and 0.5 weigh 1 together; a lone peer keeps its weight; a group whose
    members all weigh 0 stays at 0."""
    peers = ["a", "b", "c", "d", "e", "f"]
    groups = {"a": "a", "b": "a", "c": "a", "d": "d", "e": "e", "f": "e"}
    w = share_copies(peers, np.array([1.0, 1.0, 0.5, 0.7, 0.0, 0.0]), groups)
    assert np.isclose(w[:3].sum(), 1.0) and np.allclose(w[:3], [0.4, 0.4, 0.2])
    assert w[3] == 0.7 and w[4] == w[5] == 0.0


def test_copies_settings_are_validated() -> None:
    """``copies_ratio`` is a share of the own update in [0, 1); ``copies_mix_once`` a bool."""
    for bad in (-0.1, 1.0, math.nan, True):
        with pytest.raises(ConfigError):
            ScoringConfig(copies_ratio=bad)
    with pytest.raises(ConfigError):
        ScoringConfig(copies_mix_once=1)  # type: ignore[arg-type]
    assert ScoringConfig(copies_ratio=0.0).copies_ratio == 0.0


def test_far_colluders_cannot_make_honest_neighbours_count_once() -> None:
    """The attacker who knows the bound: three colluders far from everything make most pairs long, and the
    observer's own update is long (it was dragged off). Its four honest neighbours, 0.04-0.09 apart, must
    not become one group (the anchors would then be mostly the colluders'): the lower quartile of the pairs
    stays among the honest ones."""
    rng = np.random.default_rng(2)
    models = {f"h{i}": 1.0 + 0.02 * rng.normal(size=8) for i in range(4)}
    models |= {f"a{i}": 50.0 * rng.normal(size=8) for i in range(3)}
    groups = copy_groups(models, 20.0, 0.01)
    assert len({groups[f"h{i}"] for i in range(4)}) == 4
