"""Writing your own Learner: the four methods a peer needs, shown with a from-scratch numpy model.

Run: python docs/examples/custom_learner.py   (a few seconds; two peers over libp2p, prints accuracy)

A learner is any object with ``get_params``, ``set_params``, ``train`` and ``evaluate`` (the
``p2pfl.Learner`` protocol; no base class needed). The peer never sees your data, only named float32 arrays.
The rules that matter:

* every peer of a network starts from the **same initial parameters** (same names, shapes and values);
* ``get_params`` returns **copies**; ``set_params`` rejects other names or shapes (``ValueError``);
* ``train`` and ``evaluate`` are blocking and run in a worker thread while the peer reads parameters on its
  own loop: guard the state with a lock;
* ``evaluate(params)`` scores *someone else's* parameters on your validation split **without adopting them**
  (that is how a peer's own data judges its neighbours); ``evaluate()`` scores the current model.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import trio
from _digits import N_CLASSES, N_FEATURES, peer_data

import p2pfl

Params = dict[str, npt.NDArray[np.float32]]


class LinearSoftmax:
    """Multinomial logistic regression trained by mini-batch SGD with L2 decay."""

    def __init__(
        self, train: p2pfl.Dataset, val: p2pfl.Dataset, *, lr: float = 0.3, batch: int = 32, seed: int = 0
    ) -> None:
        self.train_data, self.val_data = train, val
        self.lr, self.batch = lr, batch
        self.rng = np.random.default_rng(seed)  # per peer: the order of its own batches
        self.params: Params = {  # identical on every peer
            "w": np.zeros((N_FEATURES, N_CLASSES), np.float32),
            "b": np.zeros(N_CLASSES, np.float32),
        }
        self.lock = threading.Lock()

    def get_params(self) -> Params:
        with self.lock:
            return {k: v.copy() for k, v in self.params.items()}

    def set_params(self, params: Mapping[str, npt.NDArray[Any]]) -> None:
        with self.lock:
            if set(params) != set(self.params) or any(
                params[k].shape != v.shape for k, v in self.params.items()
            ):
                raise ValueError("parameter names or shapes differ from this model's")
            self.params = {k: np.array(params[k], np.float32) for k in self.params}

    @staticmethod
    def _loss_and_grad(
        p: Mapping[str, npt.NDArray[Any]], x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]
    ) -> tuple[float, npt.NDArray[np.float32], float]:
        logits = x @ p["w"] + p["b"]
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        prob = z / z.sum(axis=1, keepdims=True)
        loss = float(-np.log(prob[np.arange(len(y)), y] + 1e-12).mean())
        accuracy = float((logits.argmax(axis=1) == y).mean())
        prob[np.arange(len(y)), y] -= 1.0
        return loss, (prob / len(y)).astype(np.float32), accuracy

    def train(self, steps: int) -> p2pfl.TrainResult:
        with self.lock:
            p, total = self.params, 0.0
            for _ in range(steps):
                idx = self.rng.integers(0, len(self.train_data), self.batch)
                x, y = self.train_data.x[idx], self.train_data.y[idx]
                loss, g, _ = self._loss_and_grad(p, x, y)
                p["w"] -= self.lr * (x.T @ g + 1e-4 * p["w"])
                p["b"] -= self.lr * g.sum(axis=0)
                total += loss
            return p2pfl.TrainResult(loss=total / steps, samples=steps * self.batch, steps=steps)

    def evaluate(self, params: Mapping[str, npt.NDArray[Any]] | None = None) -> p2pfl.EvalResult:
        with self.lock:
            p = self.params if params is None else params
            loss, _, accuracy = self._loss_and_grad(p, self.val_data.x, self.val_data.y)
            # accuracy=None is fine for models without one (regression): rollback then stays off
            return p2pfl.EvalResult(loss=loss, accuracy=accuracy, samples=len(self.val_data))


async def main() -> None:
    config = p2pfl.PeerConfig(network_id="custom-demo", max_round_wait_s=2.0, status_interval_s=0)
    learners = []
    for index in range(2):
        train, val, test = peer_data(index, num_peers=2)
        learners.append(LinearSoftmax(train, val, seed=index))
    assert all(isinstance(learner, p2pfl.Learner) for learner in learners)  # a runtime-checkable protocol
    async with p2pfl.Peer(config, learners[0]) as a, p2pfl.Peer(config, learners[1]) as b:
        await b.connect(a.listen_addrs[0])
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.run, 10)
                nursery.start_soon(b.run, 10)
        for name, peer in (("A", a), ("B", b)):
            _, _, acc = LinearSoftmax._loss_and_grad(peer.params(), test.x, test.y)
            val_acc = peer.reports[-1].val_accuracy
            print(f"peer {name}: round={peer.round} val_acc={val_acc:.3f} test_acc={acc:.3f}")


if __name__ == "__main__":
    trio.run(main)
