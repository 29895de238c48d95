"""A peer dragged by a Byzantine majority of its own neighbours (issue 16, rr6 dissensus seed 3: observer 7,
four dissensus attackers among six neighbours) must not ban its two honest neighbours, while a real poisoner
in the same place is still banned or held (``ScoringConfig.evict_near_loss``, ``evict_absurd_drift``).

The inputs replay what the trace recorded at observer 7 (``python -m p2pfl.sim.evict_trace --dataset digits
--alpha 0.3 --topology rr6 --fraction 0.25 --attack dissensus --rule default --seeds 3 --reproducible``):
in rounds 1-6 every neighbour sits inside the spread, the honest ones at a loss ratio (loss over the own)
of 13-23 on the peer's data, the attackers at 30-45 (tolerance 20, the cap); from round 7 the attackers
publish models next to the peer's own with a loss ratio of 0.1-1.5 (the tolerance falls to 1.0), and the
honest neighbours are at ``r`` 4.5-31 with the loss ratio they always had (8-22)."""

from __future__ import annotations

import numpy as np

from p2pfl.scoring import ContributionScorer, ScoreRecord, ScoringConfig

DIM = 20
ATTACKERS = ("a1", "a2", "a3", "a4")
HONEST = ("h1", "h2")
#: the honest neighbours' ``r`` at observer 7 from round 7 (seed 3's trace, peer 3), then held there
FAR = (4.5, 0.9, 6.5, 7.5, 1.1, 10.7, 18.5, 10.2, 30.5, 25.0, 30.0, 28.0)


def _dragged(
    cfg: ScoringConfig, *, far_loss: float = 12.0, near_loss: float = 18.0, rounds: int = 20
) -> dict[str, list[ScoreRecord]]:
    """The observer's scorer fed round by round; ``h2``'s loss ratio after round 6 is ``far_loss`` (the
    honest one: about its near ratio ``near_loss``; a poisoner: far more)."""
    rng = np.random.default_rng(7)
    dirs = {p: v / np.linalg.norm(v) for p, v in ((p, rng.normal(size=DIM)) for p in ATTACKERS + HONEST)}
    before = 10.0 * rng.normal(size=DIM)  # own norm ~45: the far honest models are never absurd
    scorer = ContributionScorer(cfg)
    out: dict[str, list[ScoreRecord]] = {p: [] for p in ATTACKERS + HONEST}
    for t in range(1, rounds + 1):
        scorer.begin_round()
        after = before + 0.1 * dirs["a1"][::-1]
        r_h = 1.0 if t <= 6 else FAR[min(t - 7, len(FAR) - 1)]
        models = {p: after + (1.0 if t <= 6 else 0.8) * dirs[p] for p in ATTACKERS}
        models.update({p: after + r_h * dirs[p] for p in HONEST})
        losses = {p: (35.0 if t <= 6 else 0.5) for p in ATTACKERS}
        losses["h1"] = near_loss if t <= 6 else 12.0
        losses["h2"] = near_loss if t <= 6 else far_loss
        rec = scorer.evaluate(before, after, models, after, losses, 1.0)
        for p, r in rec.items():
            out[p].append(r)
        before = after
    return out


def test_the_dragged_peer_keeps_its_honest_neighbours() -> None:
    """Fails on the previous rule (``evict_near_loss = False``): both honest neighbours banned, as at observer
    7 in round 15. With it they stay (out of the mix while far: their versions still score bad)."""
    old = _dragged(ScoringConfig(evict_near_loss=False))
    assert all(old[p][-1].status == "evicted" for p in HONEST)
    new = _dragged(ScoringConfig())
    assert all(r.status != "evicted" for p in HONEST for r in new[p])
    assert any(r.combined < ScoringConfig().bad_score for r in new["h1"][6:])
    assert all(new[p][-1].status != "evicted" for p in ATTACKERS)


def test_a_poisoner_that_is_the_far_neighbour_of_a_dragged_peer_is_still_banned() -> None:
    """Same place, but ``h2`` turns poisoner after round 6: its loss on the own data jumps to 1000x (a
    sign-flipper's), far beyond what it cost while near: banned as before."""
    new = _dragged(ScoringConfig(), far_loss=1000.0)
    assert new["h2"][-1].status == "evicted"
    assert new["h1"][-1].status != "evicted"


def test_the_adaptive_attacker_cannot_buy_an_excuse_with_a_high_near_loss() -> None:
    """The attacker who knows the rule buys a high near ratio (1000x while inside the spread, which it may:
    close models score well whatever their loss) to excuse a bad far loss later: a near ratio above the
    founding tolerance (20 here) earns nothing, and a far loss of 50x is banned. One whose near ratio was
    an honest neighbour's (18x) keeps its link up to 3x that, held out of the mix (excluded), not banned:
    on this peer's data it is then no worse than its honest neighbours."""
    banned = _dragged(ScoringConfig(), near_loss=1000.0, far_loss=50.0)
    assert banned["h2"][-1].status == "evicted"
    held = _dragged(ScoringConfig(), near_loss=18.0, far_loss=50.0)
    assert held["h2"][-1].status == "excluded"
    assert _dragged(ScoringConfig(), near_loss=18.0, far_loss=250.0)["h2"][-1].status == "evicted"
