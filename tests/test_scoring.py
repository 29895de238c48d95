"""Contribution scoring: components, reputation, exclusion, eviction, probation, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from p2pfl import aggregation as agg
from p2pfl.errors import AggregationError, ConfigError
from p2pfl.scoring import ContributionScorer, ScoreRecord, ScoringConfig

DIM = 40


class World:
    """A small deterministic non-IID world: honest neighbours in clusters around a shared model."""

    def __init__(self, seed: int = 0, n_honest: int = 8, clusters: int = 4) -> None:
        self.rng = np.random.default_rng(seed)
        self.model = np.zeros(DIM)
        self.cluster_dirs = self.rng.normal(0.0, 1.0, size=(clusters, DIM))
        self.honest = [f"h{i}" for i in range(n_honest)]
        self.clusters = {p: i % clusters for i, p in enumerate(self.honest)}
        self.own_cluster = 0

    def round(
        self, attackers: dict[str, str]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """One round: own local step, honest neighbours' local steps, attackers' models, and the centre."""
        lr, noise = 0.1, 0.02
        before = self.model.copy()
        shared = self.rng.normal(0.0, 1.0, size=DIM)  # the part of the gradient all data agrees on

        def step(cluster: int) -> np.ndarray:
            g = 0.6 * shared + self.cluster_dirs[cluster] + self.rng.normal(0.0, noise, size=DIM)
            return before + lr * g

        after = step(self.own_cluster)
        models = {p: step(c) for p, c in self.clusters.items()}
        honest_mean = np.mean(list(models.values()), axis=0)
        update = honest_mean - before
        for p, kind in sorted(attackers.items()):
            if kind == "scaled":
                models[p] = before + 50.0 * update
            elif kind == "signflip":
                models[p] = before - 5.0 * update
            elif kind == "gaussian":
                models[p] = honest_mean + self.rng.normal(0.0, 1.0, size=DIM)
            else:
                raise AssertionError(kind)
        stack = np.stack([models[p] for p in sorted(models)])
        centre = agg.aggregate(agg.AggregationConfig(), after, stack).astype(np.float64)
        self.model = centre
        self.last_after = after
        return before, after, models, centre

    def val_losses(self, models: dict[str, np.ndarray]) -> tuple[dict[str, float], float]:
        """A stand-in for the loss on the peer's own validation split: grows with the distance from the
        own freshly trained model (honest non-IID neighbours are moderately far, poisoned ones far)."""
        own = self.last_after

        def loss(m: np.ndarray) -> float:
            return float(0.1 + np.sum((m - own) ** 2))

        return {p: loss(m) for p, m in models.items()}, loss(own)


def run(
    scorer: ContributionScorer, world: World, attackers: dict[str, str], rounds: int
) -> list[dict[str, str]]:
    statuses = []
    for _ in range(rounds):
        before, after, models, centre = world.round(attackers)
        losses, own_loss = world.val_losses(models)
        records = scorer.evaluate(before, after, models, centre, losses, own_loss)
        statuses.append({p: r.status for p, r in records.items()})
    return statuses


# ----------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ema", 0.0),
        ("ema", 1.5),
        ("initial_reputation", -0.1),
        ("exclude_below", math.nan),
        ("bad_score", 2.0),
        ("evict_after", 0),
        ("evict_after", 2.5),
        ("probation_length", 0),
        ("probation_reputation", 1.1),
        ("dist_cutoff", 1.0),
        ("cos_ok", -0.9),
        ("loss_bad", 1.0),
        ("loss_bad_mix", 3.0),
        ("loss_bad_mix", math.nan),
        ("loss_bad_mix", math.inf),
        ("w_distance", -1.0),
        ("use_val_loss", 1),
        ("weighting", "softmax"),
        ("dist_hard", 4.0),
        ("dist_hard", "far"),
        ("drop_bad_at_once", "yes"),
        ("reference", "mean"),
        ("return_grace", -1),
        ("return_gap_rounds", 0),
        ("loss_floor", -0.1),
    ],
)
def test_config_rejects_bad_field_naming_it(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"\[scoring\] [\w/]*{field}"):
        ScoringConfig(**{field: value})  # type: ignore[arg-type]


def test_config_rejects_all_component_weights_zero() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        ScoringConfig(w_distance=0.0, w_cosine=0.0, w_loss=0.0)


# ----------------------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("kind", ["scaled", "signflip", "gaussian"])
def test_persistent_attacker_is_evicted_and_honest_non_iid_neighbours_stay_active(kind: str) -> None:
    cfg = ScoringConfig()
    scorer = ContributionScorer(cfg)
    world = World(seed=1)
    history = run(scorer, world, {"bad0": kind, "bad1": kind}, rounds=20)
    assert {"bad0", "bad1"} == scorer.evicted()
    first_evicted = next(i for i, st in enumerate(history) if st["bad0"] == "evicted")
    assert first_evicted < cfg.evict_after + 3
    assert all(scorer.is_admitted(p) for p in world.honest)
    assert all(st[p] == "active" for st in history for p in world.honest)


def test_honest_non_iid_neighbours_are_never_evicted_over_many_rounds() -> None:
    for seed in range(3):
        scorer = ContributionScorer()
        world = World(seed=seed, clusters=4)
        run(scorer, world, {}, rounds=30)
        assert set() == scorer.evicted()
        assert [1.0] * len(world.honest) == scorer.weights_for(world.honest).tolist()


def test_evicted_neighbours_get_zero_weight_and_leave_the_aggregate() -> None:
    scorer = ContributionScorer()
    world = World(seed=2)
    run(scorer, world, {"bad": "scaled"}, rounds=10)
    peers = ["bad", *world.honest]
    w = scorer.weights_for(peers)
    assert w[0] == 0.0
    assert np.all(w[1:] == 1.0)
    own = np.zeros(DIM, dtype=np.float32)
    nb = np.stack([np.full(DIM, 1e9), *[np.zeros(DIM)] * len(world.honest)]).astype(np.float32)
    cfg = agg.AggregationConfig(rule="mean", nnm=False, self_clip_scale=None)
    assert np.zeros(DIM).tolist() == agg.aggregate(cfg, own, nb, w).tolist()


def test_evicted_peer_is_not_scored_and_readmission_starts_probation() -> None:
    cfg = ScoringConfig(probation_length=2)
    scorer = ContributionScorer(cfg)
    world = World(seed=3)
    run(scorer, world, {"x": "scaled"}, rounds=8)
    assert scorer.status("x") == "evicted"
    before, after, models, centre = world.round({})
    models["x"] = models["h0"].copy()
    rec = scorer.evaluate(before, after, models, centre)["x"]
    assert (rec.status, rec.reason) == ("evicted", "evicted: not scored")

    scorer.readmit("x")
    assert scorer.status("x") == "probation"
    assert not scorer.is_admitted("x")
    assert cfg.probation_reputation == scorer.reputation("x")
    for _ in range(cfg.probation_length):
        before, after, models, centre = world.round({})
        models["x"] = models["h1"].copy()  # behaves honestly now
        scorer.evaluate(before, after, models, centre)
    # off probation it is admitted again but young: it earns its weight back like a new identity
    assert scorer.status("x") == "young"
    assert scorer.is_admitted("x")
    assert scorer.influence_cap("x") == 0.0


def test_bad_evaluation_on_probation_evicts_again_at_once() -> None:
    scorer = ContributionScorer()
    world = World(seed=4)
    run(scorer, world, {"x": "scaled"}, rounds=8)
    scorer.readmit("x")
    before, after, models, centre = world.round({"x": "scaled"})
    rec = scorer.evaluate(before, after, models, centre, *world.val_losses(models))["x"]
    assert rec.status == "evicted"
    assert rec.reason.startswith("evicted: bad evaluation on probation")


def test_a_returning_peers_grace_delays_eviction_but_not_exclusion() -> None:
    # a x50 model is absurd (hard_reject_factor): no grace applies to those, so this is about the soft path
    absurd = [s["x"] for s in run(ContributionScorer(), World(seed=5), {"x": "scaled"}, rounds=8)]
    assert absurd.index("evicted") == ScoringConfig().evict_after - 1
    cfg = ScoringConfig(return_grace=3, hard_reject_factor=None)
    rounds = cfg.return_grace + cfg.evict_after
    without = [s["x"] for s in run(ContributionScorer(cfg), World(seed=5), {"x": "scaled"}, rounds=rounds)]
    assert without.index("evicted") == cfg.evict_after - 1
    scorer = ContributionScorer(cfg)
    scorer.grant_grace("x")
    statuses = [s["x"] for s in run(scorer, World(seed=5), {"x": "scaled"}, rounds=rounds)]
    assert statuses.index("evicted") == rounds - 1  # evict_after bad scores after the grace
    # out of the mix (excluded by reputation) from its second bad score on, grace or not
    assert statuses[2:-1] == ["excluded"] * (rounds - 3), statuses


def test_grace_is_not_granted_to_evicted_peers_or_on_probation() -> None:
    scorer = ContributionScorer()
    world = World(seed=6)
    run(scorer, world, {"x": "scaled"}, rounds=8)
    scorer.grant_grace("x")
    assert scorer.status("x") == "evicted"
    scorer.readmit("x")
    scorer.grant_grace("x")
    before, after, models, centre = world.round({"x": "scaled"})
    rec = scorer.evaluate(before, after, models, centre, *world.val_losses(models))["x"]
    assert rec.status == "evicted"  # one bad score on probation still evicts


def test_readmit_is_a_no_op_for_peers_that_are_not_evicted() -> None:
    scorer = ContributionScorer()
    scorer.readmit("nobody")
    assert scorer.status("nobody") == "active"


def test_low_reputation_excludes_then_good_scores_restore() -> None:
    cfg = ScoringConfig(ema=0.5, exclude_below=0.6, bad_score=0.4, evict_after=5)
    scorer = ContributionScorer(cfg)
    own_before = np.zeros(4)
    own_after = np.array([1.0, 0.0, 0.0, 0.0])
    centre = np.zeros(4)
    good = {"a": np.array([1.0, 0.0, 0.0, 0.0]), "b": np.array([0.9, 0.1, 0.0, 0.0])}
    bad_b = {"a": good["a"], "b": np.array([-30.0, 0.0, 0.0, 0.0])}
    for _ in range(2):
        scorer.evaluate(own_before, own_after, bad_b, centre)
    assert scorer.status("b") == "excluded"
    assert scorer.weights_for(["a", "b"]).tolist() == [1.0, 0.0]
    for _ in range(4):
        scorer.evaluate(own_before, own_after, good, centre)
    assert scorer.status("b") == "active"


def test_validation_loss_component_penalises_a_model_that_hurts_own_data() -> None:
    scorer = ContributionScorer(ScoringConfig(w_distance=0.0, w_cosine=0.0, w_loss=1.0))
    before, after = np.zeros(3), np.array([1.0, 0.0, 0.0])
    models = {"ok": np.array([1.0, 0.1, 0.0]), "hurts": np.array([1.0, 0.0, 0.1]), "nan": np.ones(3)}
    models |= {"ok2": models["ok"], "ok3": models["ok"]}
    losses = {"ok": 1.2, "ok2": 1.1, "ok3": 1.3, "hurts": 30.0, "nan": math.nan}
    recs = scorer.evaluate(before, after, models, np.zeros(3), losses, 1.0)
    assert (recs["ok"].loss_score, recs["hurts"].loss_score, recs["nan"].loss_score) == (1.0, 0.0, 0.0)
    assert [recs["hurts"].combined, recs["ok"].combined] == [0.0, 1.0]


def test_a_model_beyond_dist_hard_scores_zero_whatever_its_loss_and_cosine() -> None:
    """A Gaussian-noised model keeps a fine loss on a skewed validation split; averaged, its distance score
    alone never made it bad. Beyond ``dist_hard`` it is bad outright; just inside, the average still rules."""
    before, after = np.zeros(2), np.array([1.0, 0.0])
    models = {f"h{i}": np.array([1.0, float(i)]) for i in range(4)}  # distances 0..3, the median 2
    models["far"] = np.array([1.0, 24.0])  # r = 12; cosine and loss fine
    models["near"] = np.array([1.0, 16.0])  # r = 8: beyond dist_cutoff, inside dist_hard
    losses = dict.fromkeys(models, 1.0)
    centre = np.array([1.0, 0.0])

    def combined(cfg: ScoringConfig) -> dict[str, float]:
        recs = ContributionScorer(cfg).evaluate(before, after, models, centre, losses, 1.0)
        return {p: r.combined for p, r in recs.items()}

    # hard_reject_factor off: at 12x the others' lower median "far" is an absurd model too (issue 15), and
    # this test is about dist_hard alone
    hard = combined(ScoringConfig(dist_hard=10.0, hard_reject_factor=None))
    soft = combined(ScoringConfig(dist_hard=None, hard_reject_factor=None))
    assert hard["far"] == 0.0 < ScoringConfig().bad_score < soft["far"]
    assert hard["near"] == soft["near"] > ScoringConfig().bad_score
    assert all(hard[f"h{i}"] == 1.0 for i in range(4))


def test_validation_loss_is_relative_to_the_neighbours_median_not_to_the_own_loss() -> None:
    """Non-IID: every honest neighbour is 10x worse than the peer on its own data; none is penalised."""
    scorer = ContributionScorer(ScoringConfig(w_distance=0.0, w_cosine=0.0, w_loss=1.0))
    before, after = np.zeros(2), np.array([1.0, 0.0])
    models = {p: np.array([1.0, 0.0]) for p in ("a", "b", "c", "bad")}
    losses = {"a": 10.0, "b": 12.0, "c": 9.0, "bad": 200.0}
    recs = scorer.evaluate(before, after, models, after, losses, 1.0)
    assert [1.0, 1.0, 1.0, 0.0] == [recs[p].loss_score for p in ("a", "b", "c", "bad")]


def test_the_loss_reference_has_a_floor_so_near_perfect_fits_make_no_honest_loss_look_poisoned() -> None:
    """Long runs: the own and most neighbours' losses approach 0, and a skewed honest neighbour's 1.2 nats
    read as 24x the reference. Against the floor (0.25) it is 4.8x: a fair score. 8 nats is poison."""
    models = {p: np.array([1.0, 0.0]) for p in ("a", "b", "c", "skewed", "bad")}
    losses = {"a": 0.04, "b": 0.05, "c": 0.06, "skewed": 1.2, "bad": 8.0}
    before, after = np.zeros(2), np.array([1.0, 0.0])

    def loss_scores(floor: float) -> list[float | None]:
        cfg = ScoringConfig(w_distance=0.0, w_cosine=0.0, w_loss=1.0, loss_floor=floor)
        recs = ContributionScorer(cfg).evaluate(before, after, models, after, losses, 0.02)
        return [recs[p].loss_score for p in ("a", "skewed", "bad")]

    a, skewed, bad = loss_scores(ScoringConfig().loss_floor)
    assert (a, bad) == (1.0, 0.0)
    assert skewed is not None and skewed > 0.7
    assert loss_scores(0.0) == [1.0, 0.0, 0.0]


def test_one_poisoned_model_beside_one_honest_neighbour_cannot_set_its_own_loss_reference() -> None:
    """Two neighbours: the reference is the lower of their losses, not their mean (which a poisoned model
    with loss 8 would drag to 4.5, making its own q < 2 and its loss score 1)."""
    scorer = ContributionScorer(ScoringConfig(w_distance=0.0, w_cosine=0.0, w_loss=1.0))
    before, after = np.zeros(2), np.array([1.0, 0.0])
    models = {p: np.array([1.0, 0.0]) for p in ("honest", "poisoned")}
    recs = scorer.evaluate(before, after, models, after, {"honest": 1.0, "poisoned": 8.0}, 0.5)
    assert recs["honest"].loss_score == 1.0
    assert recs["poisoned"].loss_score == pytest.approx(2 / 7)  # q = 8: 3 -> 1 ... 10 -> 0


def test_the_mix_keeps_a_lossy_version_the_eviction_evidence_scores_zero() -> None:
    """Two loss ramps (``loss_bad_mix``): a version at 14x the reference is past ``loss_bad`` (10), so its
    loss scores 0 for eviction, but inside the mix's ramp (to 20): an honest neighbour holding few of the
    own classes keeps its place in the mix, while one past 20x is dropped as before.
    A version bad by the eviction's score (far, against the own update, at 14x) gets no looser ramp: kept
    in the mix, it would move the centre its distance is judged from."""
    before, after = np.zeros(2), np.array([1.0, 0.0])
    models = {
        "a": np.array([1.0, 0.1]),
        "b": np.array([1.0, -0.1]),
        "c": np.array([1.1, 0.0]),
        "lossy": np.array([0.9, 0.0]),
        "worse": np.array([1.0, 0.05]),
    }
    losses = {"a": 1.0, "b": 1.0, "c": 1.0, "lossy": 14.0, "worse": 25.0, "flipper": 14.0}

    def scored(cfg: ScoringConfig) -> tuple[ContributionScorer, dict[str, ScoreRecord]]:
        scorer = ContributionScorer(cfg)
        recs: dict[str, ScoreRecord] = {}
        for t in range(cfg.founding_rounds + 1):  # (a version is doubted only after the founding rounds)
            scorer.begin_round()
            last = t == cfg.founding_rounds  # the flipper's one version: behind the own start, r 13
            now = models | {"flipper": np.array([-0.3, 0.0])} if last else models
            recs = scorer.evaluate(before, after, now, after, losses, 1.0)
        return scorer, recs

    cfg = ScoringConfig()
    assert cfg.loss_bad_mix is not None and cfg.loss_bad < 14.0 < cfg.loss_bad_mix < 25.0
    scorer, recs = scored(cfg)
    lossy, worse = recs["lossy"], recs["worse"]
    assert lossy.loss_score == 0.0 and worse.loss_score == 0.0  # what eviction evidence sees
    assert lossy.mix_score is not None and lossy.mix_score > lossy.combined
    assert worse.for_mix == worse.combined
    assert not scorer.doubted(lossy) and scorer.doubted(worse)
    flipper = recs["flipper"]
    assert flipper.combined < cfg.bad_score and flipper.mix_score is None
    old_scorer, old = scored(ScoringConfig(loss_bad_mix=None))
    assert old["lossy"].mix_score is None and old_scorer.doubted(old["lossy"])


def test_validation_loss_is_ignored_when_disabled_or_own_loss_missing() -> None:
    before, after = np.zeros(2), np.array([1.0, 0.0])
    models = {"a": np.array([1.0, 0.0])}
    off = ContributionScorer(ScoringConfig(use_val_loss=False)).evaluate(
        before, after, models, after, {"a": 9.0}, 1.0
    )
    missing = ContributionScorer().evaluate(before, after, models, after, {"a": 9.0}, None)
    assert (off["a"].loss_score, missing["a"].loss_score) == (None, None)


def test_cosine_is_skipped_when_the_own_update_is_zero() -> None:
    rec = ContributionScorer().evaluate(np.ones(3), np.ones(3), {"a": np.zeros(3)}, np.ones(3))["a"]
    assert (rec.cosine, rec.cosine_score) == (None, None)
    assert rec.distance_score == rec.combined


def test_signflipped_neighbour_gets_cosine_minus_one_and_score_zero() -> None:
    before, after = np.zeros(3), np.array([1.0, 1.0, 0.0])
    rec = ContributionScorer().evaluate(before, after, {"a": -after}, np.zeros(3))["a"]
    assert pytest.approx(rec.cosine) == -1.0
    assert rec.cosine_score == 0.0


def test_evaluation_is_deterministic_and_independent_of_mapping_order() -> None:
    world_a, world_b = World(seed=5), World(seed=5)
    s1, s2 = ContributionScorer(), ContributionScorer()
    for _ in range(6):
        ra = world_a.round({"z": "gaussian"})
        rb = world_b.round({"z": "gaussian"})
        recs1 = s1.evaluate(ra[0], ra[1], ra[2], ra[3])
        recs2 = s2.evaluate(rb[0], rb[1], dict(reversed(list(rb[2].items()))), rb[3])
        assert recs1 == recs2
        assert sorted(recs1) == list(recs1)


def test_reputation_weighting_returns_reputations_for_admitted_peers() -> None:
    scorer = ContributionScorer(ScoringConfig(weighting="reputation", ema=0.5))
    before, after = np.zeros(2), np.array([1.0, 0.0])
    scorer.evaluate(before, after, {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}, after)
    w = scorer.weights_for(["a", "b", "new"])
    assert [scorer.reputation("a"), scorer.reputation("b"), 1.0] == w.tolist()


def test_evaluate_rejects_mismatched_shapes() -> None:
    with pytest.raises(AggregationError, match="neighbours"):
        ContributionScorer().evaluate(np.zeros(3), np.zeros(3), {"a": np.zeros(4)}, np.zeros(3))
    with pytest.raises(AggregationError, match="centre"):
        ContributionScorer().evaluate(np.zeros(3), np.zeros(3), {}, np.zeros(2))
