"""Specialists (p2pfl.scoring.specialist): a neighbour whose model answers one class the own data lack is
not banned on its loss while it stays within ``specialist_distance``; beyond it, and without the setting,
it is; it never gets weight from its bad scores either way."""

from __future__ import annotations

import pytest

from p2pfl.errors import ConfigError
from p2pfl.scoring import ContributionScorer, ScoringConfig
from p2pfl.scoring.specialist import foreign_class

from ..test_scoring import World
from .test_corroboration import _place


def test_a_model_answering_one_foreign_class_is_recognised() -> None:
    own = {0, 6}
    assert foreign_class((0, 10, 0, 0, 0, 0, 0, 0, 0, 0), own, 0.9) == 1
    assert foreign_class((0, 9, 0, 0, 0, 0, 1, 0, 0, 0), own, 0.9) == 1
    assert foreign_class((0, 8, 2, 0, 0, 0, 0, 0, 0, 0), own, 0.9) is None  # scattered: not one class
    assert foreign_class((10, 0, 0, 0, 0, 0, 0, 0, 0, 0), own, 0.9) is None  # one of the own classes
    assert foreign_class((0,) * 10, own, 0.9) is None  # no samples
    assert foreign_class(None, own, 0.9) is None  # the learner does not say
    assert foreign_class((), own, 0.9) is None


def _run(cfg: ScoringConfig, ratio: float, specialist: bool, rounds: int = 60) -> list[str]:
    """Neighbour ``o`` at distance ratio ``ratio`` with a loss 1000x the own every version (as in
    test_corroboration), flagged a specialist by the caller or not."""
    scorer = ContributionScorer(cfg)
    world = World(seed=4)
    statuses: list[str] = []
    for _ in range(rounds):
        before, after, models, centre = world.round({})
        models["o"] = _place(world, centre, models, ratio)
        losses, own_loss = world.val_losses(models)
        losses["o"] = 1000.0 * own_loss
        rec = scorer.evaluate(
            before, after, models, centre, losses, own_loss, specialists={"o"} if specialist else ()
        )
        assert all(rec[p].status == "active" for p in world.honest)
        statuses.append(rec["o"].status)
        if rec["o"].status == "evicted":
            break
    assert scorer.weights_for(["o"])[0] == 0.0  # bad on the own data: no weight, excused or not
    return statuses


def test_a_specialist_far_within_the_bound_keeps_its_link_but_no_weight() -> None:
    on = ScoringConfig(specialist_share=0.9)
    assert _run(on, ratio=6.0, specialist=False)[-1] == "evicted"  # the same model, not flagged
    assert _run(ScoringConfig(), ratio=6.0, specialist=True)[-1] == "evicted"  # the setting off
    statuses = _run(on, ratio=6.0, specialist=True)
    assert len(statuses) == 60 and "evicted" not in statuses and statuses[-1] == "excluded"


def test_a_flagged_model_beyond_specialist_distance_is_evicted() -> None:
    """The attacker who knows the rule and makes its sign-flipped model answer one class its victims lack
    (66 % of sign-flip versions did in the Dirichlet 0.1 dumbbell, at ``r`` 22 median): far, it is banned."""
    cfg = ScoringConfig(specialist_share=0.9, specialist_distance=8.0)
    statuses = _run(cfg, ratio=12.0, specialist=True)
    assert statuses[-1] == "evicted" and len(statuses) <= 2 * cfg.evict_after


@pytest.mark.parametrize(
    "changes",
    [
        {"specialist_share": 0.5},
        {"specialist_share": 1.5},
        {"specialist_share": True},
        {"specialist_distance": -1},
    ],
)
def test_bad_specialist_settings_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ScoringConfig(**changes)  # type: ignore[arg-type]
