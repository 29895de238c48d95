"""Record-level DP-SGD for the numpy learner: Poisson sampling, per-example clipping, Gaussian noise.

Each step draws its batch by Poisson sampling (every training record independently with probability ``q``),
exactly the sampling dp-accounting's ``PoissonSampledDpEvent`` analyses. Each example's gradient (over
all parameters together) is scaled to L2 norm at most ``C``; the clipped gradients are summed,
``N(0, (sigma*C)^2)`` is added to every coordinate and the sum is divided by the *expected* batch size
``q * n`` (a fixed number: dividing by the drawn size would make the step depend on whether a record is
present). Weight decay and
momentum are applied afterwards to the noisy gradient: post-processing, which costs no privacy.

The per-example gradients of softmax regression and of the one-hidden-layer MLP are written out in closed
form (outer products), so their norms cost one pass and no per-example loop.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from p2pfl.errors import ConfigError

if TYPE_CHECKING:
    from p2pfl.learner import NumpySoftmaxLearner, Params

FloatArray = npt.NDArray[np.float32]
Sums = dict[str, npt.NDArray[np.float64]]


def fresh_rng() -> np.random.Generator:
    """A generator seeded from the OS's entropy: noise must not be predictable from a config's seed."""
    return np.random.default_rng(secrets.randbits(128))


@dataclass
class DPSGD:
    """DP-SGD's knobs for one learner: noise multiplier, clipping norm ``C``, sampling rate ``q``."""

    noise_multiplier: float
    clip_norm: float
    sample_rate: float
    #: draws the Poisson batches and the noise (seeded from the OS unless a test gives one)
    rng: np.random.Generator = field(default_factory=fresh_rng)

    def __post_init__(self) -> None:
        if not self.noise_multiplier >= 0 or not math.isfinite(self.noise_multiplier):
            got = self.noise_multiplier
            raise ConfigError("privacy", "noise_multiplier", f"must be >= 0, got {got!r}")
        if not self.clip_norm > 0 or not math.isfinite(self.clip_norm):
            raise ConfigError("privacy", "clip_norm", f"must be > 0, got {self.clip_norm!r}")
        if not 0 < self.sample_rate <= 1:
            got = self.sample_rate
            raise ConfigError(
                "privacy", "sample_rate", f"must be in (0, 1] (batch size / records), got {got!r}"
            )

    def sample(self, n: int) -> npt.NDArray[np.int64]:
        """One Poisson batch: the indices of the records drawn (each with probability ``q``)."""
        return np.flatnonzero(self.rng.random(n) < self.sample_rate).astype(np.int64)

    def clip_factors(self, sq_norms: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``min(1, C / ||g_i||)`` for each example's squared gradient norm."""
        norms = np.sqrt(np.maximum(sq_norms, 0.0))
        out: npt.NDArray[np.float64] = np.minimum(1.0, self.clip_norm / np.maximum(norms, 1e-12))
        return out

    def privatise(self, summed: Sums, n: int) -> Params:
        """Noise on the clipped sum, then division by the expected batch size ``q * n``."""
        scale = 1.0 / (self.sample_rate * n)
        std = self.noise_multiplier * self.clip_norm
        return {
            k: ((g + self.rng.normal(0.0, std, size=g.shape)) * scale).astype(np.float32)
            for k, g in summed.items()
        }


def clipped_sum(
    learner: NumpySoftmaxLearner, p: Params, x: FloatArray, y: npt.NDArray[np.int64], dp: DPSGD
) -> tuple[Sums, float]:
    """The sum over the batch of each example's gradient clipped to ``dp.clip_norm``, and the batch's mean
    loss (for the learner's report only; it is never published)."""
    if len(x) == 0:  # Poisson sampling may draw no record: the step is then noise alone
        return {k: np.zeros(v.shape, np.float64) for k, v in p.items()}, 0.0
    logits, h = learner._forward(p, x)
    loss, g32 = learner._softmax_xent(logits, y)
    g = g32.astype(np.float64) * len(x)  # per-example dLoss_i/dlogits (_softmax_xent divides by the batch)
    x64 = x.astype(np.float64)
    xsq = (x64 * x64).sum(axis=1)
    gsq = (g * g).sum(axis=1)
    if learner.hidden:
        assert h is not None
        h64 = h.astype(np.float64)
        gh = (g @ p["fc2.weight"].T.astype(np.float64)) * (h64 > 0)
        sq = ((h64 * h64).sum(axis=1) + 1.0) * gsq + (xsq + 1.0) * (gh * gh).sum(axis=1)
        c = dp.clip_factors(sq)[:, None]
        gc, ghc = g * c, gh * c
        summed = {
            "fc2.weight": h64.T @ gc,
            "fc2.bias": gc.sum(axis=0),
            "fc1.weight": x64.T @ ghc,
            "fc1.bias": ghc.sum(axis=0),
        }
    else:
        c = dp.clip_factors((xsq + 1.0) * gsq)[:, None]
        gc = g * c
        summed = {"fc.weight": x64.T @ gc, "fc.bias": gc.sum(axis=0)}
    return summed, loss


def numpy_dp_steps(
    learner: NumpySoftmaxLearner, p: Params, v: Params, steps: int, dp: DPSGD
) -> tuple[float, int]:
    """``steps`` DP-SGD steps of a :class:`~p2pfl.learner.NumpySoftmaxLearner` in place on ``p`` (params) and
    ``v`` (momentum); returns (sum of the batches' losses, records seen)."""
    data = learner.train_data
    n = len(data)
    total, seen = 0.0, 0
    for _ in range(steps):
        idx = dp.sample(n)
        summed, loss = clipped_sum(learner, p, data.x[idx], data.y[idx], dp)
        total += loss
        seen += len(idx)
        grads = dp.privatise(summed, n)
        for k, grad in grads.items():
            gk = grad + learner.weight_decay * p[k] if learner.weight_decay else grad
            v[k] = (learner.momentum * v[k] + gk).astype(np.float32)
            p[k] = (p[k] - learner.lr * v[k]).astype(np.float32)
    return total, seen
