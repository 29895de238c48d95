"""Learner entry points for ``p2pfl peer`` configs (``[learner] entry = "p2pfl.sim.entry:digits"``).

Each builds one peer's learner from a deterministic share of a bundled dataset, so several peer processes
started with the same ``seed`` and ``num_peers`` and different ``peer_index`` hold disjoint private data.
"""

from __future__ import annotations

from typing import Any

from p2pfl.errors import ConfigError
from p2pfl.learner import NumpySoftmaxLearner, TorchLearner

from .data import peer_splits


def digits(
    peer_index: int,
    num_peers: int,
    *,
    dataset: str = "digits",
    partition: str = "dirichlet",
    alpha: float = 0.5,
    classes_per_peer: int = 2,
    hidden: int = 32,
    lr: float = 0.1,
    momentum: float = 0.9,
    batch_size: int = 16,
    seed: int = 0,
) -> NumpySoftmaxLearner:
    """A numpy MLP (``hidden`` > 0) or softmax regression (``hidden`` = 0) on this peer's share."""
    if not 0 <= peer_index < num_peers:
        raise ConfigError("learner.params", "peer_index", f"must be in [0, {num_peers}), got {peer_index}")
    split = peer_splits(
        dataset,
        num_peers,
        partition_kind=partition,
        alpha=alpha,
        classes_per_peer=classes_per_peer,
        seed=seed,
    )[peer_index]
    return NumpySoftmaxLearner(
        split.train,
        split.val,
        split.n_classes,
        hidden=hidden,
        lr=lr,
        momentum=momentum,
        batch_size=batch_size,
        seed=seed * 1000 + peer_index,
    )


def torch_digits(
    peer_index: int, num_peers: int, *, hidden: int = 32, lr: float = 0.1, seed: int = 0, **kw: Any
) -> TorchLearner:
    """The same task with a ``torch.nn`` MLP, to show any ``nn.Module`` plugs in."""
    import torch

    split = peer_splits("digits", num_peers, seed=seed, **kw)[peer_index]
    torch.manual_seed(1_000_003)  # same initial model on every peer
    module = torch.nn.Sequential(
        torch.nn.Linear(split.n_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, split.n_classes)
    )
    return TorchLearner(
        module,
        torch.nn.functional.cross_entropy,
        (torch.from_numpy(split.train.x), torch.from_numpy(split.train.y)),
        (torch.from_numpy(split.val.x), torch.from_numpy(split.val.y)),
        optimizer=lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9),
        seed=seed * 1000 + peer_index,
    )
