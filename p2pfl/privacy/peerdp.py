"""Peer-level DP: the published delta is clipped to a norm bound and gets Gaussian noise.

The delta is the change from the peer's last public version to the model it publishes. Scaled to L2 norm at
most ``C`` (over all tensors together) it moves by at most ``2C`` whatever the peer's data; the noise
``N(0, (sigma*C)^2)`` on every coordinate then makes each published version a Gaussian mechanism on the
peer's *whole* data set (:mod:`p2pfl.privacy.accountant` accounts it). The peer keeps mixing its un-noised
trained model into its own model: that model never leaves the peer, and the next delta is clipped again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

Params = dict[str, npt.NDArray[np.float32]]


def delta_norm(trained: Mapping[str, npt.NDArray[Any]], public: Mapping[str, npt.NDArray[Any]]) -> float:
    """L2 norm of ``trained - public`` over all tensors together."""
    total = 0.0
    for k in public:
        d = np.asarray(trained[k], np.float64) - np.asarray(public[k], np.float64)
        total += float((d * d).sum())
    return math.sqrt(total)


def privatise_delta(
    trained: Mapping[str, npt.NDArray[Any]],
    public: Mapping[str, npt.NDArray[Any]],
    *,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> Params:
    """``public + clip(trained - public, clip_norm) + N(0, (noise_multiplier * clip_norm)^2)``: the model to
    publish in place of ``trained``."""
    norm = delta_norm(trained, public)
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    std = noise_multiplier * clip_norm
    out: Params = {}
    for k, base in public.items():
        b = np.asarray(base, np.float64)
        d = (np.asarray(trained[k], np.float64) - b) * scale
        out[k] = (b + d + rng.normal(0.0, std, size=b.shape)).astype(np.float32)
    return out
