"""Robust aggregation over a stack of flat model vectors.

Every function takes a ``(k, d)`` stack — ``k`` contributions of ``d`` parameters — and returns a ``(d,)``
vector (or, for the pre-steps, a new ``(k, d)`` stack). Everything here is pure: no I/O, no clock, no
randomness but the generator a caller passes (bucketing), and the inputs are never modified.

Conventions shared by all rules
-------------------------------
* Inputs are converted to C-contiguous ``float32`` (``float64`` is accepted and rounded once). Results
  are ``float32``.
* Non-finite values are assumed to have been filtered by the protocol (it rejects any delta that is not
  finite before it reaches a replica), so no function pays a full pass to check. They do not crash on
  them either: ``median``/``trimmed_mean`` propagate a NaN to the coordinate that holds it, like numpy.
* Weights are optional, non-negative, finite, one per row. A row of weight 0 is dropped before the rule
  runs, which is how the scorer's "excluded" neighbours leave the aggregate. When all remaining weights
  are equal the unweighted (fast, numpy-exact) path runs.
* Bad shapes, an empty stack, bad weights or an ``f`` too large for ``k`` raise
  :class:`~p2pfl.errors.AggregationError` naming the problem.

Tolerance and cost per rule (``k`` rows, ``d`` coordinates, ``b`` Byzantine rows)
-----------------------------------------------------------------------------------
============== ============================================= ==========================================
rule           tolerates                                     cost
============== ============================================= ==========================================
mean           nothing: one row moves it arbitrarily far     one pass, ``O(kd)``
median         ``b < k/2`` per coordinate (breakdown 1/2)    ``O(kd)`` with a sorting network over
                                                             cache-sized column blocks
trimmed_mean   ``b <= floor(beta*k)`` per coordinate         same as median
krum           ``k >= 2f + 3``, ``b <= f``                   ``O(k^2 d)`` (Gram matrix, BLAS)
multi_krum     as krum                                       as krum, plus a mean of ``m`` rows
geomed         ``b < k/2`` (breakdown 1/2, rotation-         ``O(kd)`` per Weiszfeld iteration
               invariant)
trusted_mean   as geomed, plus at most ``kappa`` times the   geomed's cost plus one mean and one
               rows' spread around it                        distance pass
centered_clip  ``b/k`` below ~0.1-0.2 with a good centre     ``O(kd)`` per iteration
nnm (pre-step) lifts any of the above to its optimal          ``O(k^2 d)`` plus a ``(k, d)`` output
               constant for ``b < k/2`` (Allouah et al. '23)
self-clip      any number of rows: each neighbour moves the   ``O(kd)`` plus a ``(k, d)`` output
(pre-step)     peer by at most ``tau`` (He et al. '22)
============== ============================================= ==========================================

Modules, in the order a peer's mix runs them (:func:`aggregate` in :mod:`.pipeline` composes them)
----------------------------------------------------------------------------------------------------
* :mod:`.clipping`: self-centred clipping (pre-step) and the centred-clipping rule.
* :mod:`.bucketing`: averages random buckets of rows (pre-step, off by default).
* :mod:`.mixing`: nearest-neighbour mixing (pre-step).
* :mod:`.coordinatewise`: mean, median, trimmed mean, on :mod:`.sortnet` (the cache-blocked sorting network).
* :mod:`.krum`: Krum and Multi-Krum; :mod:`.geomed`: the geometric median; :mod:`.trusted_mean`: the
  mean kept within a trust region around the geometric median.
* :mod:`.pipeline`: :class:`AggregationConfig` and :func:`aggregate`.
* ``_inputs`` (validation shared by every rule) and ``_distances`` (blocked Euclidean distances).
"""

from __future__ import annotations

from p2pfl.aggregation._distances import _pairwise_sq_dists as _pairwise_sq_dists
from p2pfl.aggregation.clipping import centered_clip, self_centred_clip
from p2pfl.aggregation.coordinatewise import mean, median, trimmed_mean
from p2pfl.aggregation.geomed import geometric_median
from p2pfl.aggregation.krum import krum, max_krum_f, multi_krum
from p2pfl.aggregation.mixing import nearest_neighbour_mixing
from p2pfl.aggregation.pipeline import DEFAULT_RULE, NNM_RULES, RULES, AggregationConfig, aggregate
from p2pfl.aggregation.sortnet import _order_statistics_blocked as _order_statistics_blocked
from p2pfl.aggregation.trusted_mean import trusted_mean

__all__ = [
    "DEFAULT_RULE",
    "NNM_RULES",
    "RULES",
    "AggregationConfig",
    "aggregate",
    "centered_clip",
    "geometric_median",
    "krum",
    "max_krum_f",
    "mean",
    "median",
    "multi_krum",
    "nearest_neighbour_mixing",
    "self_centred_clip",
    "trimmed_mean",
    "trusted_mean",
]
