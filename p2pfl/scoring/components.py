"""The three component scores of a neighbour's version and their combination (pure arithmetic).

Split out of :mod:`p2pfl.scoring.scorer`, which keeps the state (reputation, standing, the trackers) and the
order of the steps; here are only functions of numbers and vectors, each score in ``[0, 1]``:

* **distance** — ``r = |x_i - centre| / median distance`` (:func:`distance_ratio`; the scorer chooses whose
  distances set the median, :mod:`~p2pfl.scoring.references`). Honest non-IID neighbours sit around
  ``r ~ 1``; ``r <= dist_ok`` scores 1, falling linearly to 0 at ``r = dist_cutoff``. Beyond
  ``r = dist_hard`` (off by default) the combined score is 0 outright.
* **cosine** — ``cos(x_i - own_before, own_after - own_before)`` (:func:`cosine_score`): does the neighbour
  pull the peer the way its own data does? ``cos >= cos_ok`` scores 1, falling linearly to 0 at
  ``cos_bad``. Skipped (``None``) when either vector is zero.
* **loss** (optional) — the neighbour's model's loss on the peer's own validation split, relative to
  ``L_ref = max(L_own, loss_floor) * t`` (:class:`~p2pfl.scoring.losses.LossTolerance`), where the tolerance
  ``t`` is the anchors' median loss (of two, the smaller) over ``max(L_own, loss_floor)``, clamped to
  ``[1, loss_tolerance_max]`` (the last calibration is kept while no established neighbour is a candidate).
  ``q = L_i / L_ref`` (:func:`loss_score`); ``q <= loss_ok`` scores 1, falling to 0 at ``loss_bad``. The
  tolerance exists because on non-IID data every honest neighbour is much worse than the peer itself on its
  own split. A non-finite loss scores 0.

:func:`combine` is the weighted mean of the components present (defaults: distance 1, cosine 0.5, loss 2),
capped by the hard evidence with ``cap_by_hard_evidence`` (off by default, docs/aggregation.md).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from p2pfl.errors import AggregationError
from p2pfl.scoring.config import ScoringConfig

__all__ = ["as_vec", "combine", "cosine_score", "distance_ratio", "loss_score", "ramp_down", "unit_hint"]


def ramp_down(value: float, ok: float, bad: float) -> float:
    """1 at ``value <= ok``, 0 at ``value >= bad``, linear between (``ok < bad``)."""
    if value <= ok:
        return 1.0
    if value >= bad:
        return 0.0
    return (bad - value) / (bad - ok)


def as_vec(x: object, name: str, d: int | None = None) -> NDArray[np.float64]:
    """``x`` as a 1-D float64 vector (of length ``d`` when given), else an :class:`AggregationError`."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or (d is not None and arr.shape[0] != d):
        want = f"({d},)" if d is not None else "1-D"
        raise AggregationError(f"{name} must have shape {want}, got {arr.shape}")
    return arr


def distance_ratio(dist: float, med: float) -> float:
    """``dist`` over the median distance ``med`` (0 for a model at the centre when the median is 0)."""
    return dist / med if med > 0 else (0.0 if dist == 0 else math.inf)


def cosine_score(
    config: ScoringConfig, pull: NDArray[np.float64], own_update: NDArray[np.float64], own_norm: float
) -> tuple[float | None, float | None]:
    """(the cosine of ``pull`` with the own update, its score); both ``None`` when either vector is zero."""
    pull_norm = float(np.linalg.norm(pull))
    if own_norm > 0 and pull_norm > 0:
        cosine = float(np.clip(np.dot(pull, own_update) / (pull_norm * own_norm), -1.0, 1.0))
        return cosine, 1.0 - ramp_down(cosine, config.cos_bad, config.cos_ok)
    return None, None


def loss_score(config: ScoringConfig, loss: float, reference: float) -> float:
    """The loss score of ``loss`` against ``reference`` (0 for a non-finite loss)."""
    return ramp_down(loss / reference, config.loss_ok, config.loss_bad) if math.isfinite(loss) else 0.0


def combine(
    config: ScoringConfig, r: float, s_dist: float, s_cos: float | None, s_loss: float | None
) -> float:
    """The weighted mean of the components present (see the module doc)."""
    cfg = config
    parts = [(cfg.w_distance, s_dist), (cfg.w_cosine, s_cos), (cfg.w_loss, s_loss)]
    total_w = sum(w for w, s in parts if s is not None)
    combined = sum(w * s for w, s in parts if s is not None) / total_w if total_w > 0 else s_dist
    # Distance and own-data loss are hard evidence and cap the score; the cosine is soft
    # evidence (honest non-IID neighbours often pull against the own update) and only averages.
    if cfg.cap_by_hard_evidence:
        hard = [s for w, s in (parts[0], parts[2]) if w > 0 and s is not None]
        combined = min([combined, *hard])
    if cfg.dist_hard is not None and r >= cfg.dist_hard:
        combined = 0.0  # far outside any honest spread: no other component may average it away
    return combined


def unit_hint(value: float) -> float:
    """A weight hint clamped to [0, 1]; a non-finite hint counts as none, so it cannot poison a mix."""
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 1.0
