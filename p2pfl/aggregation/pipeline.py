"""The peer's pipeline: :class:`AggregationConfig` and :func:`aggregate`, which composes the steps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike

from p2pfl.aggregation._distances import _sq_dists_to
from p2pfl.aggregation._inputs import F32, F64, _as_stack, _as_vector
from p2pfl.aggregation.bucketing import bucket_rows
from p2pfl.aggregation.clipping import centered_clip, self_centred_clip
from p2pfl.aggregation.coordinatewise import mean, median, trimmed_mean
from p2pfl.aggregation.geomed import geometric_median
from p2pfl.aggregation.krum import krum, max_krum_f, multi_krum
from p2pfl.aggregation.mixing import nearest_neighbour_mixing
from p2pfl.aggregation.trusted_mean import trusted_mean
from p2pfl.errors import AggregationError, ConfigError

RULES: Final[tuple[str, ...]] = (
    "mean",
    "median",
    "trimmed-mean",
    "krum",
    "multi-krum",
    "geomed",
    "cclip",
    "trusted-mean",
)
#: issue 16, third pass: ``trusted-mean`` (the mean within ``trust_kappa`` spreads of the geometric median)
#: beat the geometric median in 10 of 12 matrix cells and at Dirichlet 0.1, but on a random 4-regular graph
#: the peer with three sign-flippers among four neighbours collapsed (10-15 %, and its honest neighbour then
#: evicted it) in 4 of 8 runs, never in 4 with geomed: the default stays geomed (docs/scoring.md, third pass)
DEFAULT_RULE: Final[str] = "geomed"
#: the rules ``nnm = "auto"`` always runs nearest-neighbour mixing before: the coordinate-wise and selection
#: rules, whose bias on non-IID rows NNM removes (Allouah et al. 2023; without it the median lost 6-16 points
#: on a random 4-regular graph). When ``f`` does not fit the rows (fewer than ``3f + 1``, a sparse graph),
#: ``auto`` mixes with ``f = 1`` instead of capping ``f`` at ``(n - 1) // 2``: the capped step averages each
#: row with barely more than half of the rows, and a model near the centre (ALIE, IPM) is among the nearest
#: of almost every row, so its weight is multiplied (median on 5 rows: 87.6 -> 92.7 without attackers,
#: ALIE 76.3 -> 88.4, IPM 74.2 -> 86.0; on 7 rows +1 to +3.5 in every cell). Before ``geomed`` only on at
#: least ``3f + 1`` rows: on fewer, NNM cost it 5-6 points on a random 4-regular graph (and, with the
#: threshold at ``2f + 1``, 7-9 points on the dumbbell's 9-row clique mixes), on 16 rows it still
#: made geomed more robust (docs/aggregation.md). Never before ``mean`` and ``cclip`` (self-clip + mean is
#: ClippedGossip). Measured: docs/learning.md, simulations/benchmarks-matrix.md (issue 16).
NNM_RULES: Final[frozenset[str]] = frozenset({"median", "trimmed-mean", "krum", "multi-krum"})


@dataclass(frozen=True)
class AggregationConfig:
    """How a peer aggregates; validated at construction (``ConfigError("aggregation", field, reason)``).

    Pipeline run by :func:`aggregate`: (1) self-centred clipping: clip each neighbour's difference from
    the peer's own model to norm ``self_clip_tau`` if set, else (scale-free, needs no knowledge of the
    model's scale) to ``self_clip_scale`` times the median neighbour distance from the own model, else
    not at all; (2) put the own model in the stack as row 0 with weight ``own_weight`` (it is the trusted
    root); (3) drop zero-weight rows; with ``bucket > 1``, average random buckets of rows (:mod:`.bucketing`,
    off by default); (4) if ``nnm`` (``"auto"``: see :meth:`uses_nnm`), nearest-neighbour mixing with
    :meth:`nnm_f`; (5) the ``rule``. ``f`` is an upper bound: with few rows it is lowered to
    the largest value the step accepts (Krum: ``k >= 2f+3``; NNM: ``f < k/2``) instead of failing, because
    a peer must keep learning while neighbours come and go. Defaults come from the attack simulation in
    docs/aggregation.md and the robustness matrix (simulations/benchmarks-matrix.md).
    """

    rule: str = DEFAULT_RULE
    beta: float = 0.2
    f: int = 4
    m: int | None = None
    tau: float = 1.0
    cclip_iters: int = 3
    nnm: bool | str = "auto"
    self_clip_tau: float | None = None
    self_clip_scale: float | None = 1.0
    own_weight: float = 1.0
    gm_eps: float = 1e-8
    gm_tol: float = 1e-6
    gm_max_iter: int = 100
    #: ``trusted-mean``: the mean is kept within ``trust_kappa`` times the rows' median distance from their
    #: geometric median (:mod:`.trusted_mean`)
    trust_kappa: float = 0.5
    #: average random buckets of this many rows before NNM and the rule (:mod:`.bucketing`); 1: off. Off by
    #: default: 2 lifted the digits matrix by 2 points of mean, most at Dirichlet 0.1, but a peer with half or
    #: more of its neighbours attacking fell further (to 10 % once; docs/learning.md, "Bucketing")
    bucket: int = 1

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ConfigError(
                "aggregation", "rule", f"unknown rule {self.rule!r}; choose one of {', '.join(RULES)}"
            )
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float) or not 0 <= self.beta < 0.5:
            raise ConfigError("aggregation", "beta", f"must be in [0, 0.5), got {self.beta!r}")
        for name, lo in (("f", 0), ("cclip_iters", 1), ("gm_max_iter", 1), ("bucket", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError("aggregation", name, f"must be an integer >= {lo}, got {value!r}")
        if self.nnm not in (True, False, "auto") or not isinstance(self.nnm, bool | str):
            raise ConfigError("aggregation", "nnm", f'must be true, false or "auto", got {self.nnm!r}')
        if self.m is not None and (isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 1):
            raise ConfigError("aggregation", "m", f"must be None or an integer >= 1, got {self.m!r}")
        if (
            isinstance(self.trust_kappa, bool)
            or not isinstance(self.trust_kappa, int | float)
            or not 0 <= self.trust_kappa < math.inf
        ):
            raise ConfigError(
                "aggregation",
                "trust_kappa",
                f"must be a non-negative finite number, got {self.trust_kappa!r}",
            )
        for name in ("tau", "gm_eps"):
            if not _positive_finite(getattr(self, name)):
                raise ConfigError(
                    "aggregation", name, f"must be a positive finite number, got {getattr(self, name)!r}"
                )
        if self.self_clip_tau is not None and not _positive_finite(self.self_clip_tau):
            raise ConfigError(
                "aggregation",
                "self_clip_tau",
                f"must be None or positive and finite, got {self.self_clip_tau!r}",
            )
        if self.self_clip_scale is not None and not _positive_finite(self.self_clip_scale):
            raise ConfigError(
                "aggregation",
                "self_clip_scale",
                f"must be None or positive and finite, got {self.self_clip_scale!r}",
            )
        if not _positive_finite(self.own_weight):
            raise ConfigError(
                "aggregation", "own_weight", f"must be positive and finite, got {self.own_weight!r}"
            )
        if (
            isinstance(self.gm_tol, bool)
            or not isinstance(self.gm_tol, int | float)
            or not (0 <= self.gm_tol < math.inf)
        ):
            raise ConfigError(
                "aggregation", "gm_tol", f"must be a non-negative finite number, got {self.gm_tol!r}"
            )

    def uses_nnm(self, rows: int) -> bool:
        """Whether :func:`aggregate` runs nearest-neighbour mixing on ``rows`` rows (own model included):
        ``nnm``, or with ``"auto"`` always for :data:`NNM_RULES`, for ``geomed`` when ``f`` fits the rows
        (:meth:`f_fits`)."""
        if self.nnm != "auto":
            return bool(self.nnm)
        return self.rule in NNM_RULES or (self.rule == "geomed" and self.f_fits(rows))

    def nnm_f(self, rows: int) -> int:
        """The ``f`` nearest-neighbour mixing uses on ``rows`` rows: ``f``, capped at ``(rows - 1) // 2``
        (NNM needs ``f < rows / 2``); with ``nnm = "auto"``, 1 when ``f`` does not fit the rows."""
        cap = (rows - 1) // 2
        if self.nnm == "auto" and not self.f_fits(rows):
            cap = min(cap, 1)
        return min(self.f, cap)

    def f_fits(self, rows: int) -> bool:
        """Whether ``nnm = "auto"`` mixes with the configured ``f`` on ``rows`` rows: at least ``3f + 1``
        (the classical ``n > 3f``). With fewer, the ``n - f`` nearest rows each row is averaged with are
        not many more than half, so the one or two rows that carry what the majority lacks (a dumbbell
        clique's bridge models, 9 rows) are averaged into the majority before the rule even sees them."""
        return rows >= 3 * self.f + 1


def _positive_finite(value: object) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def aggregate(
    config: AggregationConfig,
    own: ArrayLike,
    neighbours: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    own_weight: float | None = None,
    rng: np.random.Generator | None = None,
) -> F32:
    """Mix the peer's own model ``(d,)`` with its neighbours' ``(k, d)`` through ``config``'s pipeline.

    ``weights`` (one per neighbour, e.g. ``ContributionScorer.weights_for``) are applied after the own
    row, which gets ``own_weight`` (default ``config.own_weight``; the share caps of
    :mod:`p2pfl.scoring.influence` move weight to it); neighbours of weight 0 are left out entirely (also of
    NNM). With unequal weights the self-clipping radius is the weighted median distance and NNM averages
    each neighbourhood by weight, so a row's share of the mix is bounded by its share of the weights, not
    by how many rows there are. With no neighbours (``k = 0``, or all of weight 0) the own model is
    returned. See :class:`AggregationConfig` for the steps. ``rng`` draws the buckets when
    ``config.bucket > 1`` (required then: the caller owns the randomness, see :mod:`.bucketing`).
    """
    if config.bucket > 1 and rng is None:
        raise AggregationError("bucketing (bucket > 1) needs a random generator (rng)")
    own_w = config.own_weight if own_weight is None else own_weight
    if not _positive_finite(own_w):
        raise AggregationError(f"own_weight must be positive and finite, got {own_w!r}")
    own_v = np.asarray(own)
    if own_v.ndim != 1:
        raise AggregationError(f"own must be 1-D (d,), got shape {own_v.shape}")
    d = own_v.shape[0]
    own_v = _as_vector(own_v, d, "own")
    nb = np.asarray(neighbours)
    if nb.ndim == 2 and nb.shape[0] == 0:
        return own_v.copy()
    nb = _as_stack(nb, "neighbours")
    k = nb.shape[0]
    if nb.shape[1] != d:
        raise AggregationError(f"neighbours have d={nb.shape[1]} but own has d={d}")
    if weights is not None:
        w_nb = np.asarray(weights, dtype=np.float64)
        if w_nb.ndim != 1 or w_nb.shape[0] != k:
            raise AggregationError(f"weights must have shape ({k},), got {w_nb.shape}")
        if not np.all(np.isfinite(w_nb)) or np.any(w_nb < 0):
            raise AggregationError("weights must be finite and non-negative")
        keep = w_nb > 0
        if not np.any(keep):
            return own_v.copy()
        nb, w_nb = nb[keep], w_nb[keep]
        w: F64 | None = np.concatenate(([own_w], w_nb))
    else:
        w = None if own_w == 1.0 else np.concatenate(([own_w], np.ones(k)))
    if config.self_clip_tau is not None:
        nb = self_centred_clip(own_v, nb, config.self_clip_tau)
    elif config.self_clip_scale is not None:
        dists = np.sqrt(_sq_dists_to(nb, own_v))
        equal = w is None or bool(np.all(w[1:] == w[1]))
        mid = float(np.median(dists)) if equal or w is None else _weighted_median(dists, w[1:])
        radius = config.self_clip_scale * mid
        if radius > 0:
            nb = self_centred_clip(own_v, nb, radius)
    x = np.empty((nb.shape[0] + 1, d), dtype=np.float32)
    x[0] = own_v
    x[1:] = nb
    if rng is not None and config.bucket > 1:
        x, w = bucket_rows(x, w, config.bucket, rng)
    return _mix_rows(config, x, w, own_v)


def _mix_rows(config: AggregationConfig, x: F32, w: F64 | None, own_v: F32) -> F32:
    """NNM (when the config runs it on these rows) and the rule."""
    n = x.shape[0]
    if w is not None and np.all(w == w[0]):
        w = None
    if n > 1 and config.uses_nnm(n):
        f_nnm = config.nnm_f(n)
        if f_nnm > 0:
            x = nearest_neighbour_mixing(x, f_nnm, w)
    return _apply_rule(config, x, w, own_v)


def _weighted_median(values: F64 | F32, weights: F64) -> float:
    """The lower weighted median: the smallest value whose cumulative weight reaches half the total."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    i = int(np.searchsorted(cum, 0.5 * cum[-1]))
    return float(values[order[min(i, len(order) - 1)]])


def _apply_rule(config: AggregationConfig, x: F32, w: F64 | None, own: F32) -> F32:
    n = x.shape[0]
    rule = config.rule
    if rule == "mean":
        return mean(x, w)
    if rule == "median":
        return median(x, w)
    if rule == "trimmed-mean":
        return trimmed_mean(x, config.beta, w)
    if rule == "geomed":
        return geometric_median(x, w, eps=config.gm_eps, tol=config.gm_tol, max_iter=config.gm_max_iter)
    if rule == "trusted-mean":
        return trusted_mean(
            x, w, kappa=config.trust_kappa, eps=config.gm_eps, tol=config.gm_tol, max_iter=config.gm_max_iter
        )
    if rule == "cclip":
        return centered_clip(x, own, config.tau, config.cclip_iters, w)
    # Krum ignores weights (it selects rows), so only the zero-weight drop above applies.
    f = min(config.f, max_krum_f(n))
    if f < 0:  # fewer than 3 rows: nothing to select from robustly
        return median(x)
    if rule == "krum":
        return krum(x, f)
    m = None if config.m is None else min(config.m, n)
    return multi_krum(x, f, m)
