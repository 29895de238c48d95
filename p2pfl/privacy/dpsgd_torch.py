"""Record-level DP-SGD for :class:`~p2pfl.learner.TorchLearner`, with ``torch.func`` per-sample gradients.

The same algorithm as the numpy learner's (:mod:`p2pfl.privacy.dpsgd`): a Poisson batch, each example's
gradient (all parameters together) clipped to ``C``, ``N(0, (sigma*C)^2)`` added to the sum, the sum
divided by the expected batch size, then the learner's own optimiser step (momentum, weight decay:
post-processing).
Per-sample gradients come from ``vmap(grad(loss of one example))``, so any module whose output for one
example does not depend on the others works; batch normalisation mixes examples and is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from p2pfl.errors import ConfigError
from p2pfl.privacy.dpsgd import DPSGD

if TYPE_CHECKING:
    from p2pfl.learner import TrainResult
    from p2pfl.learner_torch import TorchLearner


def check_module(module: Any) -> None:
    """Refuse modules whose per-example outputs depend on the rest of the batch (batch normalisation)."""
    import torch

    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                "privacy",
                "mode",
                f"record-level DP-SGD needs per-example gradients; {name or 'the module'} is a batch norm "
                "layer, which mixes the examples of a batch (use GroupNorm or LayerNorm)",
            )


def per_sample_clipped_sum(
    learner: TorchLearner, xb: Any, yb: Any, dp: DPSGD
) -> tuple[dict[str, Any], float]:
    """Sum over the batch of each example's gradient clipped to ``dp.clip_norm`` (by parameter name), and the
    batch's mean loss (reported, never published)."""
    import torch
    from torch.func import functional_call, grad, vmap

    module, loss_fn = learner.module, learner.loss_fn
    params = {k: p.detach() for k, p in module.named_parameters() if p.requires_grad}
    buffers = {k: b.detach() for k, b in module.named_buffers()}
    if len(xb) == 0:
        return {k: torch.zeros_like(p) for k, p in params.items()}, 0.0

    def loss_one(prm: dict[str, Any], x: Any, y: Any) -> Any:
        out = functional_call(module, (prm, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    per = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, xb, yb)
    sq = torch.zeros(len(xb), dtype=torch.float64)
    for g in per.values():
        sq += g.reshape(len(xb), -1).to(torch.float64).pow(2).sum(dim=1)
    factor = torch.clamp(dp.clip_norm / torch.clamp(sq.sqrt(), min=1e-12), max=1.0)
    summed = {k: torch.einsum("n,n...->...", factor.to(g.dtype), g) for k, g in per.items()}
    with torch.no_grad():
        loss = float(loss_fn(module(xb), yb))
    return summed, loss


def torch_dp_train(learner: TorchLearner, steps: int, dp: DPSGD) -> TrainResult:
    """``steps`` DP-SGD steps with the learner's optimiser (call with the learner's lock held)."""
    import torch

    from p2pfl.learner import TrainResult

    module = learner.module
    module.train()
    n = len(learner.train_x)
    total, seen = 0.0, 0
    named = {k: p for k, p in module.named_parameters() if p.requires_grad}
    for _ in range(steps):
        idx = torch.from_numpy(dp.sample(n))
        summed, loss = per_sample_clipped_sum(learner, learner.train_x[idx], learner.train_y[idx], dp)
        total += loss
        seen += len(idx)
        std = dp.noise_multiplier * dp.clip_norm
        scale = 1.0 / (dp.sample_rate * n)
        learner.optimizer.zero_grad()
        for k, p in named.items():
            noise = torch.from_numpy(dp.rng.normal(0.0, std, size=tuple(p.shape)).astype(np.float32))
            p.grad = ((summed[k] + noise.to(p.dtype)) * scale).detach()
        learner.optimizer.step()
    return TrainResult(loss=total / max(steps, 1), samples=seen, steps=steps)
