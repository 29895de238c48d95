"""Earned influence: how much weight a neighbour may have in a mix, and what is never mixed at all.

Pure functions over one round's numbers; the per-identity state (founder, young, passes) lives in
:class:`~p2pfl.scoring.scorer.ContributionScorer`. Weights are relative to the own model's weight in the
same mix, so a *share* is ``w / (own_weight + sum(all weights))``.

* :func:`ramp_cap`: a young identity's weight cap after ``passes`` consecutive passing versions.
* :func:`cap_share`: scale a set of rows down so their total share is at most ``cap``; the weight taken
  from them goes to the own model, so the total is unchanged and several caps compose exactly.
* :func:`cap_groups`: :func:`cap_share` per group (organisation), for the roster's per-organisation cap.
* :func:`absurd`: the hard rejection screen (a distance or norm no honest model has).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from p2pfl.errors import ConfigError

__all__ = ["absurd", "cap_groups", "cap_share", "check_group_caps", "ramp_cap"]


def ramp_cap(passes: int, young_rounds: int, ramp_rounds: int) -> float:
    """0 for the first ``young_rounds`` passes, then ``(passes - young_rounds + 1) / (ramp_rounds + 1)``:
    the cap grows by one step per passing version and is 1 once the identity is established (at
    ``young_rounds + ramp_rounds`` passes)."""
    if passes < young_rounds:
        return 0.0
    if passes >= young_rounds + ramp_rounds:
        return 1.0
    return (passes - young_rounds + 1) / (ramp_rounds + 1)


def cap_share(
    weights: NDArray[np.float64], mask: Sequence[bool], own_weight: float, cap: float
) -> tuple[NDArray[np.float64], float]:
    """Scale the rows in ``mask`` so that together they hold at most ``cap`` of the mix (own row included);
    the excess goes to the own row. Returns new weights and the new own weight (inputs are not modified)."""
    w = np.array(weights, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    total = own_weight + float(w.sum())
    held = float(w[m].sum())
    allowed = cap * total
    if held <= allowed or held <= 0.0:
        return w, own_weight
    w[m] *= allowed / held
    return w, own_weight + (held - allowed)


def cap_groups(
    peers: Sequence[str],
    weights: NDArray[np.float64],
    own_weight: float,
    groups: Mapping[str, str],
    caps: Mapping[str, float],
) -> tuple[NDArray[np.float64], float]:
    """Apply each group's cap (``caps[group]``) to the peers ``groups`` assigns to it, in sorted group
    order. Peers with no group, and groups with no cap, are not limited."""
    w = np.array(weights, dtype=np.float64)
    for group in sorted(caps):
        mask = [groups.get(p) == group for p in peers]
        if any(mask):
            w, own_weight = cap_share(w, mask, own_weight, caps[group])
    return w, own_weight


def check_group_caps(caps: Mapping[str, float]) -> dict[str, float]:
    """Validate a group -> cap table (each a share in ``[0, 1]``)."""
    out = {}
    for group, cap in caps.items():
        if not isinstance(group, str):
            raise ConfigError("groups", "caps", f"group names must be strings, got {group!r}")
        if isinstance(cap, bool) or not isinstance(cap, int | float) or not 0.0 <= cap <= 1.0:
            raise ConfigError("groups", "caps", f"cap of {group!r} must be a number in [0, 1], got {cap!r}")
        out[group] = float(cap)
    return out


def absurd(
    own_after: NDArray[np.float64],
    models: Mapping[str, NDArray[np.float64]],
    established: Collection[str],
    factor: float | None,
) -> dict[str, float]:
    """The models no honest neighbour could publish, with their distance from the own trained model.

    A model is absurd when its distance is not finite, or beyond ``factor`` times the larger of the own
    model's norm and the *other* established neighbours' lower median distance. The own norm is in the
    yardstick so the first rounds (no established distances yet) and a late joiner's far-off first versions
    (at most about the models' own size away) stay inside it; the models near -1e38 seen in the extreme-norm
    attack sit dozens of orders of magnitude outside.
    """
    if factor is None:
        return {}
    dist = {p: float(np.linalg.norm(m - own_after)) for p, m in models.items()}
    own_norm = float(np.linalg.norm(own_after))
    est = {p: d for p, d in dist.items() if p in established and math.isfinite(d)}

    def scale(peer: str) -> float:
        # each model is measured against the others' lower median, never its own distance: the models under
        # test are among the established ones (founders), and with the plain median of two a model near
        # -1e38 set half its own yardstick (measured: mixed with share 0.5 from round 1)
        others = sorted(d for p, d in est.items() if p != peer)
        return max(own_norm, others[(len(others) - 1) // 2] if others else 0.0)

    out: dict[str, float] = {}
    for p, d in dist.items():
        yardstick = scale(p)
        if not math.isfinite(d) or (math.isfinite(yardstick) and yardstick > 0.0 and d > factor * yardstick):
            out[p] = d
    return out
