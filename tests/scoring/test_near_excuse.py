"""Sign-flippers must not escape bans through the near-loss excuse or the founding rounds' lenient loss
(issue 16, nearfix; ``ScoringConfig.evict_near_loss``, ``evict_far_against``; docs/scoring.md).

Two scorer inputs replay what the traces recorded:

* the 5-peer IID sign-flip scenario in real time (tests/rollout/test_report.py's): the sign-flipper at
  ``r`` 9-12 with cosine -0.6..-0.77 costs the own data only 2-9x the own loss while the tolerance is
  1.0-1.9 (loss score 0.6-1, combined 0.35-0.57: not bad), so its bad run restarted and some honest peers
  had not evicted it by round 8;
* a dragged peer (rr6 dissensus seed 3, observer 7: four mimicking attackers collapse its tolerance to 1)
  whose neighbour sat near at an honest neighbour's loss ratio (18x) in the founding rounds and so owned
  an excuse up to the founding tolerance (20), then turns sign-flipper.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from p2pfl.errors import ConfigError
from p2pfl.scoring import ContributionScorer, ScoreRecord, ScoringConfig

DIM = 20


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _towards(step: np.ndarray, cosine: float, other: np.ndarray) -> np.ndarray:
    """A unit vector at ``cosine`` with the unit vector ``step``, in the plane of ``step`` and ``other``."""
    side = _unit(other - np.dot(other, step) * step)
    return cosine * step + np.sqrt(1.0 - cosine**2) * side


def _iid(cfg: ScoringConfig, *, pull: float, loss: float, rounds: int = 8) -> list[ScoreRecord]:
    """An observer with three honest neighbours next to its own model (loss 1.4x the own) and a fourth at
    ``r`` ~11 whose pull on the own model has cosine ``pull`` with the own update (-1: a sign-flipper,
    0: an honest neighbour far off on other data) and whose loss is ``loss`` times the own."""
    rng = np.random.default_rng(3)
    before = rng.normal(size=DIM)
    scorer = ContributionScorer(cfg)
    out: list[ScoreRecord] = []
    for _ in range(rounds):
        scorer.begin_round()
        step = _unit(rng.normal(size=DIM))
        after = before + 0.1 * step
        models = {f"h{i}": after + 0.1 * _unit(rng.normal(size=DIM)) for i in range(3)}
        models["x"] = before + 1.1 * _towards(step, pull, rng.normal(size=DIM))
        losses = {"h0": 1.4, "h1": 1.4, "h2": 1.4, "x": loss}
        out.append(scorer.evaluate(before, after, models, after, losses, 1.0)["x"])
        before = after
    return out


def test_a_far_anti_aligned_sign_flipper_with_a_mild_loss_is_evicted() -> None:
    """Fails on the old rule (``evict_far_against = False``): the sign-flipper's loss (5x the own against a
    tolerance of 1.4) scores 0.9, its combined score 0.52 is never bad, and it is never banned. Now each
    such version counts and it is evicted within ``evict_after`` versions."""
    old = _iid(ScoringConfig(evict_far_against=False), pull=-0.9, loss=5.0)
    assert all(r.distance >= 4.0 and r.cosine is not None and r.cosine <= -0.5 for r in old)
    assert all(r.combined >= ScoringConfig().bad_score for r in old)
    assert all(r.status != "evicted" for r in old)
    new = _iid(ScoringConfig(), pull=-0.9, loss=5.0)
    assert [r.status for r in new].index("evicted") < ScoringConfig().evict_after
    assert "against the own update" in new[0].reason


def test_far_alone_or_anti_aligned_with_a_clean_loss_does_not_count() -> None:
    """Each of the three conditions is needed: a far neighbour pulling across the own update (cosine 0,
    as the dragged peers' honest neighbours did), or anti-aligned with a loss within
    ``evict_far_against_loss`` times the reference (2x since order17r; 1.2x the own against a tolerance
    of 1.4; with nearfix's bar of 3, 4x), is not banned."""
    cases = ((ScoringConfig(), 0.0, 5.0), (ScoringConfig(), -0.9, 1.2))
    for cfg, pull, loss in (*cases, (ScoringConfig(evict_far_against_loss=3.0), -0.9, 4.0)):
        recs = _iid(cfg, pull=pull, loss=loss)
        assert all(r.status != "evicted" for r in recs), (pull, loss)
        assert not any("against the own update" in r.reason for r in recs)


#: the far neighbour's ``r`` at the dragged observer from round 7 (rr6 dissensus seed 3, peer 3), then held
FAR = (4.5, 0.9, 6.5, 7.5, 1.1, 10.7, 18.5, 10.2, 30.5, 25.0, 30.0, 28.0)


def _dragged(
    cfg: ScoringConfig, *, pull: float | None, far_loss: float, rounds: int = 20
) -> list[ScoreRecord]:
    """The dragged observer (four attackers mimic its own model from round 7: tolerance 1) and ``n``, near
    at a loss ratio of 18 in rounds 1-6, then at ``FAR`` with ``far_loss``; its pull has cosine ``pull``
    with the own update (``None``: a random direction, as an honest neighbour's)."""
    rng = np.random.default_rng(7)
    attackers = ("a1", "a2", "a3", "a4")
    dirs = {p: _unit(rng.normal(size=DIM)) for p in (*attackers, "h", "n")}
    before = 10.0 * rng.normal(size=DIM)
    scorer = ContributionScorer(cfg)
    out: list[ScoreRecord] = []
    for t in range(1, rounds + 1):
        scorer.begin_round()
        step = _unit(rng.normal(size=DIM))
        after = before + 0.1 * step
        r_far = 1.0 if t <= 6 else FAR[min(t - 7, len(FAR) - 1)]
        models = {p: after + (1.0 if t <= 6 else 0.8) * dirs[p] for p in attackers}
        models["h"] = after + r_far * dirs["h"]
        away = dirs["n"] if pull is None or t <= 6 else _towards(step, pull, dirs["n"])
        models["n"] = after + r_far * away
        losses = {p: (35.0 if t <= 6 else 0.5) for p in attackers}
        losses["h"] = 18.0 if t <= 6 else 12.0
        losses["n"] = 18.0 if t <= 6 else far_loss
        out.append(scorer.evaluate(before, after, models, after, losses, 1.0)["n"])
        before = after
    return out


def test_a_sign_flipper_cannot_use_a_near_history_as_an_excuse() -> None:
    """The adaptive attacker: it sits near at an honest neighbour's loss ratio (18x) while the tolerance
    is high, then, once its colluders collapsed the tolerance to 1, publishes anti-aligned models at 50x
    the own loss. Fails on the old excuse: held (excluded) but never banned, as an honest neighbour with
    that history and loss is (test_dragged_peer). Now an anti-aligned version earns no excuse: banned."""
    honest_like = _dragged(ScoringConfig(), pull=None, far_loss=50.0)
    assert honest_like[-1].status == "excluded"
    new = _dragged(ScoringConfig(), pull=-1.0, far_loss=50.0)
    assert all(r.cosine is not None and r.cosine <= -0.5 for r in new[6:] if r.status != "evicted")
    assert new[-1].status == "evicted"
    # the excuse's gate alone bans it (its far versions are bad by loss: the far-against rule is not needed)
    assert _dragged(ScoringConfig(evict_far_against=False), pull=-1.0, far_loss=50.0)[-1].status == "evicted"
    # one that keeps its cosine just above ``cos_bad`` keeps the excuse (docs/scoring.md, failure modes):
    # held out of the mix, not banned, as on main
    diluted = _dragged(ScoringConfig(), pull=-0.45, far_loss=50.0)
    assert diluted[-1].status == "excluded"


def test_the_dragged_peers_honest_neighbour_keeps_its_excuse() -> None:
    """The case the excuse was built for is untouched: a far neighbour at its usual loss (12x, near ratio
    18x) is not banned, whether it pulls across the own update or somewhat against it (cosine -0.3)."""
    for pull in (None, -0.3):
        recs = _dragged(ScoringConfig(), pull=pull, far_loss=12.0)
        assert all(r.status != "evicted" for r in recs), pull


def _first_near(cfg: ScoringConfig, *, rounds: int = 20, first_pull: float = -0.3) -> list[ScoreRecord]:
    """The default scenario's sign-flipper over libp2p (traced at every honest observer of a 9/12 run):
    its first version sits near (``r`` ~1) at the founding tolerance (13x the own loss, every model one
    round from the same initial one), every later one far (``r`` ~10) across the own update (cosine
    about 0 on Dirichlet data) at 30-100x while the honest neighbours' ratio falls to 2. Its first
    version pulls at cosine ``first_pull`` on the own update (the sign-flippers' first versions over
    libp2p: -0.05 at most in 108 pairs of 9 runs, the near ones -0.2 to -0.61)."""
    rng = np.random.default_rng(5)
    honest = [f"h{i}" for i in range(5)]
    before = rng.normal(size=DIM)
    scorer = ContributionScorer(cfg)
    out: list[ScoreRecord] = []
    for t in range(1, rounds + 1):
        scorer.begin_round()
        step = _unit(rng.normal(size=DIM))
        after = before + 0.1 * step
        models = {p: after + 0.1 * _unit(rng.normal(size=DIM)) for p in honest}
        if t == 1:
            models["x"] = before + 0.1 * _towards(step, first_pull, rng.normal(size=DIM))
        else:
            models["x"] = after + 1.0 * _towards(step, 0.0, rng.normal(size=DIM))
        losses = {p: 13.0 if t == 1 else 2.0 for p in honest}
        losses["x"] = 13.0 if t == 1 else (30.0, 60.0, 100.0)[t % 3]
        out.append(scorer.evaluate(before, after, models, after, losses, 1.0)["x"])
        before = after
    return out


def test_a_first_version_near_at_the_start_buys_no_excuse() -> None:
    """Fails on main: the one near ratio of the first version (13x, the founding tolerance) excuses every
    far loss up to ~6x it; the sign-flipper is held (excluded) for the whole run, never banned, as at 3 of 12
    honest observers in the traced run. Now a first version pulling against the own update records no near
    ratio: banned (with ``near_first_cos = -1``, which lets it record one, held as on main)."""
    recs = _first_near(ScoringConfig())
    assert recs[0].distance <= ScoringConfig().dist_ok and recs[0].combined >= ScoringConfig().bad_score
    assert recs[0].cosine is not None and recs[0].cosine < 0.0
    assert all(r.cosine is not None and r.cosine > ScoringConfig().cos_bad for r in recs[1:] if r.cosine)
    assert recs[-1].status == "evicted"
    assert _first_near(ScoringConfig(near_first_cos=-1.0))[-1].status != "evicted"  # (the excuse, bought)


def test_a_first_version_pulling_along_the_own_update_buys_the_excuse() -> None:
    """``near_first_cos``: a first version that pulls along the own update (cosine 0.6 here) is a
    learner's and records its near ratio, as a Byzantine majority's victim's does in the same-round order
    (its one undragged version). The attacker who knows the rule publishes such a first version and is then
    held (excluded, weight 0) rather than banned, as one that behaves for a few near versions already is
    (``test_the_dragged_peers_honest_neighbour_keeps_its_excuse``); with ``inf`` it is banned."""
    cfg = ScoringConfig()
    recs = _first_near(cfg, first_pull=0.6)
    assert recs[0].cosine is not None and recs[0].cosine >= cfg.near_first_cos
    assert recs[0].distance <= cfg.dist_ok
    assert all(r.status != "evicted" for r in recs) and recs[-1].status == "excluded"
    assert _first_near(ScoringConfig(near_first_cos=math.inf), first_pull=0.6)[-1].status == "evicted"


@pytest.mark.parametrize("value", [-1.5, math.nan, -math.inf, True, "0.2"])
def test_config_rejects_bad_near_first_cos(value: object) -> None:
    with pytest.raises(ConfigError, match=r"\[scoring\] near_first_cos"):
        ScoringConfig(near_first_cos=value)  # type: ignore[arg-type]


def test_near_first_cos_accepts_any_cosine_and_inf() -> None:
    for value in (-1.0, 0.0, 0.2, 1.0, math.inf):
        assert ScoringConfig(near_first_cos=value).near_first_cos == value
