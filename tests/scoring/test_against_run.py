"""A sign-flipper is banned in the same-round order too: far and against the own update continue hard
evidence whatever the loss (``ScoringConfig.evict_against_continues``), and count above twice the loss
reference (``evict_far_against_loss``); an honest laggard is not; issue 16, order17s and order17r;
docs/scoring.md, "Against, after the loss is gone".

The scorer inputs replay what the trace of bench_scale's scenario recorded in the same-round order
(``wait_before_mix``; 100 peers, logistic regression, 10 % sign-flippers, simulated clock): the flipper's
first three versions cost an honest observer 15-106x its own loss (``r`` 10-14, cosine -0.87..-0.89), then
the model has converged, its flipped update is tiny and costs nothing (0.26x the own loss in round 4, 0
after) while it stays far (``r`` 8 -> 4) and anti-aligned (cosine -0.89..-0.58). At 200 peers honest
neighbours on the converged trajectory lagged behind the own model as far and as anti-aligned (``r`` 4-13,
cosine -0.7..-0.94) at no loss. The scorer has no clock: a round is one ``begin_round`` and one
``evaluate``.
"""

from __future__ import annotations

import numpy as np
import pytest

from p2pfl.errors import ConfigError
from p2pfl.scoring import ContributionScorer, ScoreRecord, ScoringConfig

DIM = 20
#: the flipper at the traced observers, per version: (distance from the own model in honest spreads,
#: its loss over the own)
FLIPPER = ((14.0, 106.0), (12.0, 83.0), (10.0, 15.0), (8.0, 0.26), (6.0, 0.01), (5.0, 0.0), (5.0, 0.0))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _towards(step: np.ndarray, cosine: float, other: np.ndarray) -> np.ndarray:
    """A unit vector at ``cosine`` with the unit vector ``step``, in the plane of ``step`` and ``other``."""
    side = _unit(other - np.dot(other, step) * step)
    return cosine * step + np.sqrt(1.0 - cosine**2) * side


def _replay(
    cfg: ScoringConfig,
    versions: tuple[tuple[float, float, float], ...],
    *,
    seed: int = 11,
    grace_at: int | None = None,
    extra_from: int | None = None,
) -> tuple[list[ScoreRecord], list[bool]]:
    """An observer with five honest neighbours about one spread from its own model (loss 1.2x the own: the
    loss reference is 1.2) and ``x``, whose version of round ``t`` sits ``versions[t][0]`` spreads away,
    pulls the own model with cosine ``versions[t][1]`` against the own update and costs ``versions[t][2]``
    times the own loss. ``grace_at``: ``x`` comes back from a silence before that version
    (``ContributionScorer.grant_grace``); ``extra_from``: from that version on, each round is one trained
    call and one extra mixing step's call (``extra_step``) scoring ``x`` alike (the records are the extra
    step's). Returns ``x``'s records and whether each version left the mix (bad, or
    ``ContributionScorer.doubted``)."""
    rng = np.random.default_rng(seed)
    honest = [f"h{i}" for i in range(5)]
    before = rng.normal(size=DIM)
    scorer = ContributionScorer(cfg)
    out: list[ScoreRecord] = []
    dropped: list[bool] = []
    for t, (dist, cosine, loss) in enumerate(versions):
        scorer.begin_round()
        if t == grace_at:
            scorer.grant_grace("x")
        step = _unit(rng.normal(size=DIM))
        after = before + 0.1 * step
        models = {p: after + 0.1 * _unit(rng.normal(size=DIM)) for p in honest}
        models["x"] = before + 0.1 * dist * _towards(step, cosine, rng.normal(size=DIM))
        losses = {p: 1.2 for p in honest} | {"x": loss}
        if extra_from is not None and t >= extra_from:
            scorer.evaluate(before, after, models, after, losses, 1.0)
            out.append(scorer.evaluate(before, after, models, after, losses, 1.0, extra_step=True)["x"])
        else:
            out.append(scorer.evaluate(before, after, models, after, losses, 1.0)["x"])
        dropped.append(out[-1].combined < cfg.bad_score or scorer.doubted(out[-1]))
        before = after
    return out, dropped


def _flipper(cosine: float = -0.89) -> tuple[tuple[float, float, float], ...]:
    return tuple((dist, cosine, loss) for dist, loss in FLIPPER)


def test_a_converged_sign_flipper_is_banned_on_its_direction() -> None:
    """Fails with the rule off (``evict_against_continues = False``): the first three versions count (bad
    by loss), the fourth costs nothing and scores above ``bad_score``, the bad run restarts and the flipper
    is never banned. Now a far version against the own update counts while the hard evidence kept holds a
    whole counted version: banned at its fourth version, as in the old order."""
    old, _ = _replay(ScoringConfig(evict_against_continues=False), _flipper())
    assert [r.combined < ScoringConfig().bad_score for r in old[:4]] == [True, True, True, False]
    assert all(r.distance >= 4.0 and r.cosine is not None and r.cosine <= -0.5 for r in old)
    assert all(r.status != "evicted" for r in old)
    new, _ = _replay(ScoringConfig(), _flipper())
    assert [r.status for r in new].index("evicted") == 3
    assert "with hard evidence 2.79 kept" in new[3].reason


def test_an_honest_neighbour_lagging_on_a_converged_trajectory_is_never_counted() -> None:
    """The 200-peer trace's honest neighbours: far, anti-aligned, at no loss, from the start. Nothing to
    continue and no loss: never counted, however long (a rule that counted a run of anti-aligned far versions
    whatever the loss, with no bad evidence before, banned five such pairs)."""
    for cosine in (-0.94, -0.7):
        recs, _ = _replay(ScoringConfig(), tuple((dist, cosine, 0.001) for dist in (5, 7, 9, 11, 13) * 3))
        assert all(r.status != "evicted" and "counted" not in r.reason for r in recs), cosine


def test_far_and_anti_aligned_above_the_loss_reference_counts() -> None:
    """The marginal seed of the 5-peer scenario (tests/rollout/test_report.py, seed 4) in the same-round
    order: the flipper's founding versions cost the observer 2.5-2.8x its loss reference, under nearfix's bar
    of ``loss_ok`` (3): not bad (combined 0.57), not counted, banned only at round 9. Above twice the
    reference (``evict_far_against_loss = 2``) each counts: banned at its fourth version."""
    versions = tuple((dist, -0.84, 2.5 * 1.2) for dist in (13.0, 10.0, 7.0, 7.0, 7.0, 8.0, 8.0, 8.0))
    old, _ = _replay(ScoringConfig(evict_far_against_loss=3.0), versions)
    assert all(r.combined >= ScoringConfig().bad_score and r.status != "evicted" for r in old)
    new, _ = _replay(ScoringConfig(), versions)
    assert [r.status for r in new].index("evicted") == ScoringConfig().evict_after - 1
    assert "loss over 2.0 x reference" in new[0].reason
    # under the reference (an honest neighbour's loss or less), far and anti-aligned alone start nothing
    clean, _ = _replay(ScoringConfig(), tuple((d, c, 1.0) for d, c, _ in versions))
    assert all("counted" not in r.reason for r in clean)


def _pausing(pause: int) -> tuple[tuple[float, float, float], ...]:
    """The converged flipper that, once its flipped update stops costing anything, publishes ``pause``
    versions near and along the own update, then flips again: far, anti-aligned, at no loss."""
    flipped = ((dist, -0.89, 0.0) for dist in (8, 7, 6, 6, 5, 5, 5, 5))
    return (*_flipper()[:3], *((1.0, 0.6, 1.2) for _ in range(pause)), *flipped)


def test_the_flipper_that_pauses_once_is_banned_all_the_same() -> None:
    """The attacker who knows that one good version ends a bad run: it pauses for one version, then flips
    again. Its three lossy versions are still in its hard evidence (2.6 after the pause): banned at its
    second free flipped version."""
    recs, _ = _replay(ScoringConfig(), _pausing(1))
    assert recs[3].combined >= ScoringConfig().bad_score and "counted" not in recs[3].reason
    assert [r.status for r in recs].index("evicted") == 5


def test_the_flipper_that_waits_out_its_evidence_keeps_its_link_but_no_weight() -> None:
    """The attacker who knows the whole rule pauses until its hard evidence leaked below one counted version
    (15 versions at ``bad_memory`` 0.93 from 2.79), then flips at no loss: it is not banned (the failure
    mode, docs/scoring.md). Each free flipped version (``r`` 5-8: combined 0.57, below ``drop_below``, with
    a distance score below 1) still leaves the mix it is scored in, and it costs the own data nothing."""
    recs, dropped = _replay(ScoringConfig(), _pausing(15))
    assert all(r.status != "evicted" for r in recs)
    assert "with hard evidence" not in recs[18].reason
    assert not any(dropped[3:18]) and all(dropped[18:])


def _lagging(first_loss: float) -> tuple[tuple[float, float, float], ...]:
    """An honest neighbour that starts lagging before convergence: its first far, anti-aligned version
    (``r`` 6, cosine -0.8) costs ``first_loss`` times the own loss (the reference is 1.2), the next five
    lag farther (``r`` 6-10) at no loss."""
    return ((6.0, -0.8, first_loss), *((float(d), -0.8, 0.01) for d in range(6, 11)))


def test_a_laggard_once_lossy_is_not_banned_on_its_direction() -> None:
    """Fails with rule 2 seeded by any count (order17s: the bad evidence of a version counted by rule 1
    only continued at any loss): the laggard's first version costs 1.04-2.5x the reference and counts by
    rule 1 at a bar of 1 (``evict_far_against_loss``), its bucket then holds 1 and every later far,
    anti-aligned version counted: banned at its fourth version. Now only hard evidence (a bad score, an
    absurd model, or far and against above ``loss_ok`` times the reference) lets far and against continue,
    and only while it holds a whole counted version."""
    for first_loss in (1.25, 1.5, 2.0, 3.0):
        recs, _ = _replay(ScoringConfig(evict_far_against_loss=1.0), _lagging(first_loss))
        assert "loss over 1.0 x reference" in recs[0].reason, first_loss
        assert all(r.status != "evicted" and "counted" not in r.reason for r in recs[1:]), first_loss
    # above loss_ok x the reference the first version is hard evidence, one whole counted version: the
    # next continues it, then the bucket has leaked below 1 (rule 2 counts add no hard evidence)
    recs, _ = _replay(ScoringConfig(evict_far_against_loss=1.0), _lagging(4.0 * 1.2))
    assert ["counted" in r.reason for r in recs] == [True, True, False, False, False, False]
    assert "with hard evidence 1.00 kept" in recs[1].reason


def test_an_honest_neighbour_between_one_and_two_references_is_not_counted() -> None:
    """Fails with the bar at 1 (order17s' default): far and anti-aligned at 1.1-1.9x the loss reference,
    version after version (a neighbour a little behind the own model before convergence), counted each
    time and banned at its fourth version. The default bar (2) leaves it alone; at 2.5x (the marginal
    sign-flipper's figure) it is counted."""
    for ratio in (1.1, 1.5, 1.9):
        versions = tuple((d, -0.8, ratio * 1.2) for d in (6.0, 7.0, 8.0, 7.0, 6.0, 6.0, 7.0, 8.0))
        recs, _ = _replay(ScoringConfig(), versions)
        assert all(r.status != "evicted" and "counted" not in r.reason for r in recs), ratio
        old, _ = _replay(ScoringConfig(evict_far_against_loss=1.0), versions)
        assert [r.status for r in old].index("evicted") == 3, ratio


def test_a_flipper_silent_for_a_return_gap_keeps_its_hard_evidence() -> None:
    """The silent escape: the converged flipper with three lossy versions (hard evidence 2.79) goes quiet
    for more than ``return_gap_rounds`` and is granted the return grace (``grant_grace``) when it comes
    back. The grace used to discard all its evidence, as an honest returner's, and its free flipped
    versions then started nothing: never banned. Now the grace drops the run and the bad bucket but keeps
    the hard one (leaking per version): nothing counts within the grace, and the free versions after it
    continue the kept evidence. An honest laggard with no hard evidence is not touched (the test below)."""
    cfg = ScoringConfig()
    free = tuple((dist, -0.89, 0.0) for dist in (8.0, 7.0, 6.0, 6.0, 5.0, 5.0, 5.0, 5.0) + (5.0,) * 8)
    recs, dropped = _replay(cfg, (*_flipper()[:3], *free), grace_at=3)
    statuses = [r.status for r in recs]
    grace = slice(3, 3 + cfg.return_grace)
    assert "evicted" not in statuses[grace] and not any("counted" in r.reason for r in recs[grace])
    assert all(d or r.status == "excluded" for r, d in zip(recs[grace], dropped[grace], strict=True))
    after = recs[3 + cfg.return_grace :]
    assert "with hard evidence" in after[0].reason  # counted at once, on the evidence kept
    assert "evicted" in statuses[3 + cfg.return_grace :]
    # without the silence the same versions are banned at the first free one
    recs, _ = _replay(cfg, (*_flipper()[:3], *free))
    assert [r.status for r in recs].index("evicted") == 3


def test_an_honest_returner_far_and_against_after_its_grace_is_not_counted() -> None:
    """A laggard with no hard evidence that comes back far and anti-aligned at no loss, and stays so past
    the grace: what the kept hard evidence must not reach."""
    versions = tuple((d, -0.9, 0.001) for d in (2.0, 2.0, 2.0, *(5.0, 7.0, 9.0, 11.0, 13.0) * 3))
    recs, _ = _replay(ScoringConfig(), versions, grace_at=3)
    assert all(r.status != "evicted" and "counted" not in r.reason for r in recs)


@pytest.mark.parametrize("bar", [0.0, 0.99, -1.0, float("inf"), float("nan")])
def test_a_far_against_bar_under_the_reference_is_rejected(bar: float) -> None:
    """Under the reference itself (or 0) a far, anti-aligned honest neighbour at the median loss counts."""
    with pytest.raises(ConfigError, match="evict_far_against_loss"):
        ScoringConfig(evict_far_against_loss=bar)


def test_extra_mixing_steps_neither_start_nor_spare_far_and_against() -> None:
    """``mix_steps`` > 1: each round scores the neighbours' trained versions, then their mixes
    (``extra_step``) against the round's own update. Rule 2 reads the same hard evidence in both: an honest
    laggard's trained and mixed versions (far, anti-aligned, no loss) start nothing, a once-lossy one's
    neither; the converged flipper is banned at its fourth version as without extra steps."""
    lagging = tuple((d, -0.9, 0.001) for d in (5.0, 7.0, 9.0, 11.0, 13.0) * 2)
    for versions in (lagging, _lagging(2.0)):
        recs, _ = _replay(ScoringConfig(), versions, extra_from=0)
        assert all(r.status != "evicted" and "counted" not in r.reason for r in recs)
    recs, _ = _replay(ScoringConfig(), _flipper(), extra_from=3)
    assert [r.status for r in recs].index("evicted") == 3
