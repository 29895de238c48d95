"""Heading (issue 16): a neighbour whose offset from the centre keeps pointing along minus the neighbours'
per-coordinate spread (ALIE) or back against the centre's motion (IPM) loses mixing weight; honest
neighbours whose offsets are their own data's pull keep theirs. Adversarial: the attacks themselves and the
adaptive forms that know the rule."""

from __future__ import annotations

import numpy as np
import pytest

from p2pfl.errors import ConfigError
from p2pfl.scoring import ContributionScorer, ScoringConfig
from p2pfl.scoring.heading import Heading, HeadingConfig

DIM = 300
HONEST = [f"h{k}" for k in range(5)]


def _honest(
    rng: np.random.Generator, centre: np.ndarray, pulls: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Each honest neighbour: the centre plus its own data's persistent pull plus noise."""
    return {p: centre + pulls[p] + 0.3 * rng.normal(size=DIM) / np.sqrt(DIM) for p in HONEST}


def _run(
    rng: np.random.Generator, attacker: str, rounds: int = 12, tracker: Heading | None = None
) -> Heading:
    """``rounds`` evaluations of a centre moving along a fixed progress direction, 5 honest neighbours with
    persistent non-IID pulls and one attacker ``a`` of the given kind."""
    tracker = tracker if tracker is not None else Heading(HeadingConfig(lag=True))
    progress = rng.normal(size=DIM) / np.sqrt(DIM)
    pulls = {p: rng.normal(size=DIM) / np.sqrt(DIM) for p in HONEST}
    signs = rng.choice([-1.0, 1.0], size=DIM)
    centre = rng.normal(size=DIM)
    for _ in range(rounds):
        centre = centre + 0.5 * progress + 0.05 * rng.normal(size=DIM) / np.sqrt(DIM)
        models = _honest(rng, centre, pulls)
        stack = np.stack(list(models.values()))
        mean, std = stack.mean(axis=0), stack.std(axis=0)
        if attacker == "alie":
            models["a"] = mean - 1.0 * std
        elif attacker == "alie_random":
            models["a"] = mean - 1.0 * signs * std
        elif attacker == "ipm":
            models["a"] = centre - 0.5 * 0.5 * progress * 2.0  # behind the centre by one round's progress
        elif attacker == "ipm_evading":
            behind = -0.5 * progress
            u = progress / np.linalg.norm(progress)
            models["a"] = centre + behind - (behind @ u) * u  # the push's part back along progress dropped
        tracker.observe(centre, models, dict.fromkeys(models, True))
    return tracker


@pytest.mark.parametrize("attack", ["alie", "ipm"])
def test_the_attacker_loses_its_weight_and_honest_non_iid_neighbours_keep_theirs(attack: str) -> None:
    rng = np.random.default_rng(1)
    tracker = _run(rng, attack)
    assert tracker.weight("a") == 0.0
    assert all(tracker.weight(p) == 1.0 for p in HONEST)


def test_the_lag_test_is_on_by_default() -> None:
    tracker = _run(np.random.default_rng(1), "ipm", tracker=Heading())
    assert tracker.weight("a") == 0.0 and tracker.lag_open
    off = _run(np.random.default_rng(1), "ipm", tracker=Heading(HeadingConfig(lag=False)))
    assert off.weight("a") == 1.0 and off.lag("a") is None and not off.lag_open


def _lagging(
    n_behind: int,
    rounds: int = 12,
    share: float = 1.0 / 3.0,
    own_cos: float = 1.0,
    insane_last: str | None = None,
) -> Heading:
    """Six neighbours: ``n_behind`` of them sit behind the centre on its way (as IPM does, and as honest
    neighbours do when dissensus drags the observer's own centre away from them), the rest are honest
    non-IID neighbours. The own trained model sits off the centre at cosine ``own_cos`` with its motion (1:
    clearly ahead; -1: behind it, as an observer dragged by dissensus), measured from the neighbours'
    median."""
    rng = np.random.default_rng(7)
    tracker = Heading(HeadingConfig(lag_share=share, lag_firm_share=max(share, 0.5)))
    progress = rng.normal(size=DIM) / np.sqrt(DIM)
    names = [f"n{k}" for k in range(6)]
    pulls = {p: rng.normal(size=DIM) / np.sqrt(DIM) for p in names}
    u = progress / np.linalg.norm(progress)
    side = rng.normal(size=DIM)
    side -= (side @ u) * u
    side /= np.linalg.norm(side)
    own_offset = 0.1 * (own_cos * u + np.sqrt(1.0 - own_cos**2) * side)
    centre = rng.normal(size=DIM)
    for r in range(rounds):
        centre = centre + 0.5 * progress
        models = {p: centre + pulls[p] + 0.3 * rng.normal(size=DIM) / np.sqrt(DIM) for p in names}
        for p in names[:n_behind]:
            models[p] = centre - 0.5 * progress + 0.1 * pulls[p]
        own = np.median(np.stack(list(models.values())), axis=0) + own_offset
        scored = dict.fromkeys(models, True)
        if insane_last is not None and r == rounds - 1:
            del models[insane_last]  # scored, but its version was not sane (absurd): not in ``models``
        tracker.observe(own, models, scored)
    return tracker


def test_a_minority_that_lags_is_held_out() -> None:
    tracker = _lagging(2)
    assert tracker.lag_open
    assert [tracker.weight(f"n{k}") for k in range(6)] == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_half_of_the_neighbours_lagging_behind_an_own_model_that_keeps_up_are_held_out() -> None:
    """Adversarial: IPM colluders that know the gate (more than a third lagging stands it down) gather three
    of an observer's six neighbours: under the old gate they kept their full weight (recorded: rr6, 25 %,
    seed 2, the three such observers gave their IPM neighbours weight > 0.1 in 9-30 of rounds 11-40). The own
    trained model still keeps up with the centre's motion, so the laggers are behind it: held."""
    tracker = _lagging(3)
    assert all(tracker.lag(f"n{k}") < HeadingConfig().lag_bad for k in range(3))  # type: ignore[operator]
    assert tracker.lag_open
    assert [tracker.weight(f"n{k}") for k in range(6)] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(("n_behind", "own_cos"), [(3, 0.05), (4, 1.0)])
def test_when_more_than_a_third_lags_and_the_own_model_barely_keeps_up_the_lag_test_stands_down(
    n_behind: int, own_cos: float
) -> None:
    """Under dissensus the attackers drag the observer's own centre away from its honest neighbours, which
    then all lag behind its motion: a lag test that held them cut the peer off the honest network (rr6
    dissensus 80.7 / 44.9 %, 7 false evictions). Beyond a third lagging the test weighs only while the own
    model is clearly ahead (``lag_firm_own``), and never beyond a half (``lag_firm_share``): documented
    limit, four IPM attackers among six neighbours are not held."""
    tracker = _lagging(n_behind, own_cos=own_cos)
    assert all(tracker.lag(f"n{k}") < HeadingConfig().lag_ok for k in range(n_behind))  # type: ignore[operator]
    assert not tracker.lag_open
    assert all(tracker.weight(f"n{k}") == 1.0 for k in range(6))
    assert _lagging(n_behind, own_cos=own_cos, share=0.7).weight("n0") == 0.0  # the share is the knob


def test_a_held_neighbour_stays_held_after_a_version_that_is_not_sane() -> None:
    """Review: a held IPM attacker sent one absurd version (scored 0, not among the sane models) and the
    heading forgot its lag and its hold: full weight again from its next version on."""
    tracker = _lagging(2, rounds=13, insane_last="n0")
    assert tracker.weight("n0") == 0.0 and tracker.lag("n0") is not None
    assert tracker.weight("n1") == 0.0


def test_reset_forgets_the_hold() -> None:
    tracker = _lagging(2)
    assert tracker.weight("n0") == 0.0
    tracker.reset("n0")
    assert tracker.weight("n0") == 1.0 and tracker.lag("n0") is None and len(tracker) == 5


def test_when_the_own_model_lags_behind_the_centre_the_lag_test_stands_down() -> None:
    """The other mark of a centre that dissensus drags: the own trained model falls behind its motion too
    (recorded: honest observers under IPM kept a smoothed own lag >= -0.02, under dissensus 5 % of their
    evaluations were at -0.33 or below). Then even a lagging minority keeps its weight."""
    tracker = _lagging(2, own_cos=-1.0)
    assert not tracker.lag_open
    assert all(tracker.weight(f"n{k}") == 1.0 for k in range(6))


def _lag_attacker(config: HeadingConfig, how: str, seed: int, rounds: int = 30) -> float:
    """An IPM attacker among five honest neighbours that keep up with the centre, its offset at a chosen
    cosine with the centre's motion each round. ``how``: ``hover`` (the recorded leak: its lag hovers around
    ``lag_bad``, -0.42 plus noise), ``pulse`` (knows the rule: pushes hard, -0.7, while it has weight and
    eases off, -0.1, while held) or ``floor`` (knows the thresholds: sits at -0.28, just inside ``lag_ok``).
    Returns the push it got into the mix: the sum over its versions of weight times ``-cosine``."""
    rng = np.random.default_rng(seed)
    tracker = Heading(config)
    progress = rng.normal(size=DIM) / np.sqrt(DIM)
    u = progress / np.linalg.norm(progress)
    side = rng.normal(size=DIM)
    side -= (side @ u) * u
    side /= np.linalg.norm(side)
    pulls = {p: rng.normal(size=DIM) / np.sqrt(DIM) for p in HONEST}
    centre = rng.normal(size=DIM)
    pushed = 0.0
    for _ in range(rounds):
        centre = centre + 0.5 * progress
        models = _honest(rng, centre, pulls)
        if how == "hover":
            cos = float(np.clip(-0.42 + 0.12 * rng.normal(), -0.99, 0.99))
        elif how == "pulse":
            cos = -0.7 if tracker.lag("a") is None or tracker.weight("a") > 0.0 else -0.1
        else:
            cos = -0.28
        models["a"] = centre + 0.3 * (cos * u + np.sqrt(1.0 - cos**2) * side)
        tracker.observe(centre + 0.1 * u, models, dict.fromkeys(models, True))
        pushed += tracker.weight("a") * -cos
    return pushed


PLAIN_RAMP = HeadingConfig(lag_release=HeadingConfig.lag_bad)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_an_ipm_attacker_hovering_around_lag_bad_is_held_by_the_hysteresis(seed: int) -> None:
    """The recorded leak (rr6, 25 %, observers with two IPM neighbours): the attacker's smoothed lag hovers
    at -0.36 to -0.42, inside the ramp, and the ramp gave it part of its weight back round after round."""
    plain = _lag_attacker(PLAIN_RAMP, "hover", seed)
    held = _lag_attacker(HeadingConfig(), "hover", seed)
    assert plain > 2.0 and held < plain / 3, (plain, held)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_documented_limit_an_attacker_that_knows_the_hysteresis_keeps_a_duty_cycle(seed: int) -> None:
    """Documented limit: an attacker that pushes while it has weight and eases off until it is released gets
    more into the mix than under the plain ramp (released at ``lag_release`` with its full weight, it is
    mixed for a version or two before it is held again), but less than the attacker that simply sits
    just inside ``lag_ok`` under either rule (``ipm_lag_floor``, docs/scoring.md): the hysteresis does not
    give an adaptive attacker a better strategy than the one it had."""
    floor = min(_lag_attacker(c, "floor", seed) for c in (PLAIN_RAMP, HeadingConfig()))
    pulse = _lag_attacker(HeadingConfig(), "pulse", seed)
    assert _lag_attacker(PLAIN_RAMP, "pulse", seed) < pulse < floor, (pulse, floor)


def test_honest_neighbours_alone_keep_full_weight_over_many_seeds() -> None:
    for seed in range(20):
        tracker = _run(np.random.default_rng(seed), "none", rounds=20)
        assert all(tracker.weight(p) == 1.0 for p in HONEST), seed


@pytest.mark.parametrize("attack", ["alie_random", "ipm_evading"])
def test_documented_limit_the_adaptive_attacks_keep_their_weight(attack: str) -> None:
    """The adaptive forms (simulations/attacks.py ``alie_signs = "random"``, ``ipm_evade_lag``) are not seen
    by this signal: what they still achieve is measured in docs/scoring.md."""
    tracker = _run(np.random.default_rng(2), attack)
    assert tracker.weight("a") == 1.0


def test_one_version_decides_nothing_and_reset_forgets() -> None:
    rng = np.random.default_rng(3)
    tracker = _run(rng, "none", rounds=6)
    centre = np.zeros(DIM)
    models = {p: rng.normal(size=DIM) for p in HONEST}
    std = np.stack(list(models.values())).std(axis=0)
    models["h0"] = centre - std  # one ALIE-looking version of an established honest neighbour
    tracker.observe(centre, models, dict.fromkeys(models, True))
    assert tracker.weight("h0") > 0.0
    tracker = _run(np.random.default_rng(4), "alie")
    tracker.reset("a")
    assert tracker.weight("a") == 1.0 and tracker.shift("a") is None and tracker.lag("a") is None


def test_not_applying_forgets_and_non_finite_models_never_raise() -> None:
    tracker = _run(np.random.default_rng(5), "alie")
    centre = np.zeros(DIM)
    models = {"a": np.full(DIM, np.nan), "b": np.ones(DIM), "c": np.zeros(DIM)}
    tracker.observe(centre, models, {"a": False, "b": True, "c": True})
    assert tracker.weight("a") == 1.0
    tracker.observe(np.full(DIM, np.inf), {"b": np.full(DIM, np.inf)}, {"b": True})
    assert 0.0 <= tracker.weight("b") <= 1.0


@pytest.mark.parametrize(
    "kw",
    [
        {"heading_lag_ok": -0.5, "heading_lag_bad": -0.3},
        {"heading_shift_ok": 0.1, "heading_shift_bad": -1.5},
        {"heading_shift_ok": float("nan")},
        {"heading_memory": 1.0},
        {"heading": "yes"},
        {"heading_lag": 1},
        {"heading_lag_share": 1.5},
        {"heading_lag_share": float("nan")},
        {"heading_lag_own_ok": -1.5},
        {"heading_lag_release": 1.5},
        {"heading_lag_release": float("nan")},
        {"heading_lag_firm_share": -0.1},
        {"heading_lag_firm_share": 1.5},
        {"heading_lag_firm_own": -1.5},
        {"heading_lag_own_ok": "high"},
        {"heading_lag_share": "half"},
    ],
)
def test_config_rejects_bad_values(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ScoringConfig(**kw)  # type: ignore[arg-type]


def test_heading_config_defaults_are_valid() -> None:
    HeadingConfig()
    assert ScoringConfig().heading_config() == HeadingConfig()


def _scorer_round(
    scorer: ContributionScorer, rng: np.random.Generator, centre: np.ndarray, pulls: dict[str, np.ndarray]
) -> None:
    scorer.begin_round()
    models = _honest(rng, centre, pulls)
    stack = np.stack(list(models.values()))
    models["a"] = stack.mean(axis=0) - stack.std(axis=0)
    before = centre + 0.05 * rng.normal(size=DIM) / np.sqrt(DIM)
    after = before + 0.3 * rng.normal(size=DIM) / np.sqrt(DIM)
    scorer.evaluate(before, after, models, centre)


@pytest.mark.parametrize("on", [True, False])
def test_the_scorer_holds_out_an_alie_neighbour_after_the_founding_rounds(on: bool) -> None:
    rng = np.random.default_rng(6)
    scorer = ContributionScorer(ScoringConfig(heading=on, echo=False))
    pulls = {p: rng.normal(size=DIM) / np.sqrt(DIM) for p in HONEST}
    centre = rng.normal(size=DIM)
    for _ in range(scorer.config.founding_rounds):
        _scorer_round(scorer, rng, centre, pulls)
    founding = scorer.weights_for(["a"])[0]
    assert founding > 0.0  # within the founding rounds the heading is not applied
    for _ in range(8):
        _scorer_round(scorer, rng, centre, pulls)
    weights = dict(zip([*HONEST, "a"], scorer.weights_for([*HONEST, "a"]), strict=True))
    assert bool(weights["a"] == 0.0) is on
    assert all(weights[p] > 0.0 for p in HONEST)


def _crowd(target: np.ndarray, n: int = 12) -> dict[str, np.ndarray]:
    """A crowd of identical new identities just beyond ``target`` along a fixed all-positive pattern: as a
    majority it becomes the median, ``target``'s offset from it points along minus the pattern, and the
    spread it adds follows the pattern: ``target`` looks exactly like ALIE's shift."""
    pattern = 0.5 * (1.0 + np.arange(DIM) % 3) / np.sqrt(DIM)
    return {f"y{k}": target + pattern for k in range(n)}


def test_a_crowd_of_new_identities_cannot_frame_an_established_neighbour() -> None:
    rng = np.random.default_rng(3)
    pulls = {p: rng.normal(size=DIM) / np.sqrt(DIM) for p in HONEST}
    centre = rng.normal(size=DIM)
    with_ref, without = Heading(), Heading()
    for _ in range(8):
        models = _honest(rng, centre, pulls)
        models |= _crowd(models["h0"])
        scored = dict.fromkeys(models, True)
        with_ref.observe(centre, models, scored, HONEST)
        without.observe(centre, models, scored)
    assert without.weight("h0") == 0.0  # the framing works when every identity sets the centre
    assert all(with_ref.weight(p) == 1.0 for p in HONEST)


def test_the_scorer_measures_heading_against_its_established_neighbours() -> None:
    rng = np.random.default_rng(6)
    scorer = ContributionScorer(ScoringConfig(echo=False))
    pulls = {p: rng.normal(size=DIM) / np.sqrt(DIM) for p in HONEST}
    centre = rng.normal(size=DIM)
    for k in range(scorer.config.founding_rounds + 8):
        scorer.begin_round()
        models = _honest(rng, centre, pulls)
        if k >= scorer.config.founding_rounds:  # the crowd arrives after the founders are established
            models |= _crowd(models["h0"])
        before = centre + 0.05 * rng.normal(size=DIM) / np.sqrt(DIM)
        after = before + 0.3 * rng.normal(size=DIM) / np.sqrt(DIM)
        scorer.evaluate(before, after, models, centre)
    assert all(scorer.is_established(p) for p in HONEST)
    assert all(w > 0.0 for w in scorer.weights_for(HONEST))


def test_a_neighbour_that_echo_holds_does_not_set_the_heading_centre() -> None:
    """A dissensus model aimed at this peer (beyond the own trained model along the own update) is held
    by echo; it must not drag the heading's centre either, or the honest neighbours would lag behind that
    motion (docs/scoring.md, fifth pass)."""
    rng = np.random.default_rng(8)
    scorer = ContributionScorer(ScoringConfig())
    assert scorer.heading is not None
    references: list[list[str]] = []
    observe = scorer.heading.observe

    def spy(own: object, models: object, scored: object, reference: list[str] | None = None) -> None:
        references.append(sorted(reference or []))
        observe(own, models, scored, reference)  # type: ignore[arg-type]

    scorer.heading.observe = spy  # type: ignore[method-assign]
    pulls = {p: rng.normal(size=DIM) / np.sqrt(DIM) for p in HONEST}
    centre = rng.normal(size=DIM)
    for _ in range(scorer.config.founding_rounds + 4):
        scorer.begin_round()
        before = centre + 0.05 * rng.normal(size=DIM) / np.sqrt(DIM)
        after = before + 0.3 * rng.normal(size=DIM) / np.sqrt(DIM)
        models = _honest(rng, centre, pulls)
        models["d"] = after + 1.0 * (after - before)  # the own step extrapolated: echo +1
        losses = dict.fromkeys(models, 0.5)
        scorer.evaluate(before, after, models, centre, losses, 0.3)
    assert scorer.echo is not None and scorer.echo.weight("d") == 0.0
    assert references[-1] == sorted(HONEST)


@pytest.mark.parametrize(
    ("kw", "attr", "value"),
    [
        ({"heading_lag_ok": 0.0, "heading_lag_bad": -0.1}, "release_at", -0.1),
        ({"heading_lag_own_ok": 0.3}, "firm_own_at", 0.3),
        ({"heading_lag_share": 0.6}, "firm_share_at", 0.6),
        ({}, "release_at", -0.2),
        ({}, "firm_own_at", 0.1),
        ({}, "firm_share_at", 0.5),
    ],
)
def test_a_config_written_before_the_firm_gate_and_hysteresis_still_loads(
    kw: dict[str, object], attr: str, value: float
) -> None:
    """Review: the three settings added later were checked against the older ones' defaults, so a config
    with e.g. ``heading_lag_bad = -0.1`` stopped loading; each is now lifted to its partner instead."""
    cfg = ScoringConfig(**kw).heading_config()  # type: ignore[arg-type]
    assert getattr(cfg, attr) == pytest.approx(value)
