"""Learners: the model and private data of one peer, behind one small protocol.

The peer never sees data, only named float arrays (``get_params``/``set_params``), a training call and an
evaluation. ``train`` and ``evaluate`` are blocking and CPU-bound: the peer runs them in a worker thread so
the network loop never stalls (a libp2p Yamux write fails after 5 s if the reader is blocked).

``evaluate(params)`` scores *someone else's* parameters on this peer's own validation split without disturbing
the local model: that is how the peer's own data serves as the trusted root when scoring neighbours.

Two implementations ship: :class:`NumpySoftmaxLearner` (multinomial logistic regression or a one-hidden-layer
MLP in plain numpy: fast, deterministic, no torch; used by tests and large simulations) and
:class:`~p2pfl.learner_torch.TorchLearner` (any ``torch.nn.Module``; its own module, importable from here).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from p2pfl.learner_torch import TorchLearner
    from p2pfl.privacy.dpsgd import DPSGD

__all__ = [
    "Dataset",
    "EvalResult",
    "Learner",
    "NumpySoftmaxLearner",
    "ResettableLearner",
    "ScoringLearner",
    "TorchLearner",
    "TrainResult",
    "reset_optimizer",
    "validation_scores",
]

Params = dict[str, npt.NDArray[np.float32]]
FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TrainResult:
    loss: float
    samples: int
    steps: int


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float | None
    samples: int
    #: how many of the evaluated samples the model assigned to each class (``None``: the learner does not
    #: say). Scoring uses it to recognise a neighbour whose model answers one class the own data lack
    #: (p2pfl.scoring.specialist).
    predicted: tuple[int, ...] | None = None


@runtime_checkable
class Learner(Protocol):
    """What a peer needs from a model and its private data."""

    def get_params(self) -> Params:
        """A copy of the current parameters as named float32 arrays."""
        ...

    def set_params(self, params: Mapping[str, npt.NDArray[Any]]) -> None:
        """Replace the parameters (names and shapes must match)."""
        ...

    def train(self, steps: int) -> TrainResult:
        """Run ``steps`` optimisation steps on local data."""
        ...

    def evaluate(self, params: Mapping[str, npt.NDArray[Any]] | None = None) -> EvalResult:
        """Loss/accuracy on the local validation split, of ``params`` if given (without adopting them)."""
        ...


@runtime_checkable
class ScoringLearner(Protocol):
    """Optional: a learner that exposes per-sample class probabilities, for quality metrics and rollout.

    ``p2pfl.quality`` needs probabilities for macro F1 and AUC, and the rollout evaluates candidate versions
    on the host's labelled feedback. A learner without these methods still works everywhere: its versions
    then get accuracy and loss only (from ``evaluate``) and feedback is refused (:func:`validation_scores`
    returns ``None``)."""

    def predict_proba(
        self, x: npt.NDArray[Any], params: Mapping[str, npt.NDArray[Any]] | None = None
    ) -> FloatArray:
        """Class probabilities (n, n_classes) of ``params`` (default: the current model) for inputs ``x``."""
        ...

    def validation_data(self) -> tuple[npt.NDArray[Any], IntArray]:
        """The local validation split: inputs and integer labels."""
        ...


@runtime_checkable
class ResettableLearner(Protocol):
    """Optional: a learner whose optimiser state (momentum) can be dropped.

    A diverged round leaves that state non-finite, and it carries over rounds (the heavy ball across rounds
    helps learning, so ``set_params`` keeps it). A peer that discards the diverged round and restarts from
    its last good model drops the state too (:meth:`reset_optimizer`); without that every later round
    diverges again from any start, and the peer never trains again."""

    def reset_optimizer(self) -> None:
        """Forget the optimiser's accumulated state; the parameters stay."""
        ...


def reset_optimizer(learner: object) -> bool:
    """Drop ``learner``'s optimiser state if it can (:class:`ResettableLearner`); whether it could. Looked up,
    not an ``isinstance`` check: from Python 3.12 a protocol check ignores ``__getattr__``, and wrappers that
    delegate through it (the metrics' timed learner, the simulation's attackers) would read as unable."""
    reset = getattr(learner, "reset_optimizer", None)
    if not callable(reset):
        return False
    reset()
    return True


def validation_scores(
    learner: Learner, params: Mapping[str, npt.NDArray[Any]] | None = None
) -> tuple[FloatArray, IntArray] | None:
    """(probabilities, labels) of ``params`` on the learner's validation split, or ``None`` when the learner
    does not expose probabilities (the default for a learner that is not a :class:`ScoringLearner`)."""
    if not isinstance(learner, ScoringLearner):
        return None
    x, y = learner.validation_data()
    probs: FloatArray = learner.predict_proba(x, params)
    return probs, y


def _softmax(logits: npt.NDArray[Any]) -> FloatArray:
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: FloatArray = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def _mean(values: npt.NDArray[Any]) -> float:
    """``float(values.mean())`` of a 1-D float array, bit for bit, without ``numpy.mean``'s generic
    dispatch (about half of a small evaluation's cost): the same pairwise sum, divided the same way."""
    total = np.add.reduce(values)
    return float(total.dtype.type(total / np.intp(len(values))))


def _fraction(hits: npt.NDArray[np.bool_]) -> float:
    """``float(hits.mean())`` of a 1-D boolean array, bit for bit: an exact count over the length."""
    return int(np.count_nonzero(hits)) / len(hits)


def _check_same_layout(current: Mapping[str, npt.NDArray[Any]], new: Mapping[str, npt.NDArray[Any]]) -> None:
    if set(current) != set(new):
        raise ValueError(f"parameter names differ: expected {sorted(current)}, got {sorted(new)}")
    for name, arr in current.items():
        if tuple(new[name].shape) != tuple(arr.shape):
            raise ValueError(
                f"parameter {name!r} has shape {tuple(new[name].shape)}, expected {tuple(arr.shape)}"
            )


@dataclass(frozen=True)
class Dataset:
    """A peer's private data: features (n, f) float32 and integer labels (n,)."""

    x: FloatArray
    y: IntArray

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ValueError(
                f"Dataset needs x of shape (n, f) and y of shape (n,), got {self.x.shape}, {self.y.shape}"
            )

    def __len__(self) -> int:
        return len(self.y)


class NumpySoftmaxLearner:
    """Softmax regression (``hidden=0``) or a one-hidden-layer ReLU MLP, SGD with momentum, in numpy.

    Deterministic for a given seed. Thread-safe: a lock serialises training, evaluation and parameter access,
    so the peer may read parameters while a worker thread trains.
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset,
        n_classes: int,
        *,
        hidden: int = 0,
        lr: float = 0.1,
        momentum: float = 0.9,
        batch_size: int = 16,
        weight_decay: float = 0.0,
        lr_decay: float = 1.0,
        lr_min: float = 0.0,
        prox: float = 0.0,
        seed: int = 0,
    ) -> None:
        if len(train) == 0:
            raise ValueError("a learner needs at least one training example")
        if not 0.0 < lr_decay <= 1.0 or not 0.0 <= lr_min <= lr:
            raise ValueError(f"need 0 < lr_decay <= 1 and 0 <= lr_min <= lr, got {lr_decay}, {lr_min}, {lr}")
        self.train_data, self.val_data = train, val
        self.n_classes, self.hidden = n_classes, hidden
        self.lr, self.momentum, self.batch_size, self.weight_decay = lr, momentum, batch_size, weight_decay
        #: the learning rate shrinks by ``lr_decay`` after every ``train`` call (one per round), never below
        #: ``lr_min``: late rounds then move the model less, so local drift stops pulling peers apart
        self.lr_decay, self.lr_min = lr_decay, lr_min
        if not 0.0 <= prox < float("inf"):
            raise ValueError(f"need 0 <= prox < inf, got {prox}")
        #: proximal term (FedProx, Li et al. 2020): each step adds ``prox * (w - w_start)`` to the gradient,
        #: ``w_start`` the model the round started from, so local steps on skewed data drift less from the mix
        self.prox = prox
        self._rng = np.random.default_rng(seed)
        f = train.x.shape[1]
        init = np.random.default_rng(1_000_003)  # same initial model on every peer: seed-independent
        if hidden:
            self._params: Params = {
                "fc1.weight": (init.standard_normal((f, hidden)) * np.sqrt(2.0 / f)).astype(np.float32),
                "fc1.bias": np.zeros(hidden, np.float32),
                "fc2.weight": (init.standard_normal((hidden, n_classes)) * np.sqrt(1.0 / hidden)).astype(
                    np.float32
                ),
                "fc2.bias": np.zeros(n_classes, np.float32),
            }
        else:
            self._params = {
                "fc.weight": np.zeros((f, n_classes), np.float32),
                "fc.bias": np.zeros(n_classes, np.float32),
            }
        self._velocity = {k: np.zeros_like(v) for k, v in self._params.items()}
        self._order = np.empty(0, np.int64)
        self._cursor = 0
        self._lock = threading.Lock()
        #: record-level DP-SGD (p2pfl.privacy.dpsgd), set by a peer with ``[privacy] mode = "record"``
        self.dp: DPSGD | None = None

    def dp_sample_rate(self) -> float:
        """DP-SGD's Poisson sampling rate: ``batch_size`` records expected per step."""
        return min(1.0, self.batch_size / len(self.train_data))

    def enable_dp(self, dp: DPSGD | None) -> None:
        """Train with DP-SGD from now on (``None``: plain SGD again)."""
        with self._lock:
            self.dp = dp

    def get_params(self) -> Params:
        with self._lock:
            return {k: v.copy() for k, v in self._params.items()}

    def set_params(self, params: Mapping[str, npt.NDArray[Any]]) -> None:
        with self._lock:
            _check_same_layout(self._params, params)
            self._params = {k: np.array(params[k], dtype=np.float32, copy=True) for k in self._params}

    def reset_optimizer(self) -> None:
        with self._lock:
            self._velocity = {k: np.zeros_like(v) for k, v in self._params.items()}

    def _forward(
        self, p: Mapping[str, npt.NDArray[Any]], x: FloatArray
    ) -> tuple[FloatArray, FloatArray | None]:
        if self.hidden:
            h = np.maximum(x @ p["fc1.weight"] + p["fc1.bias"], 0.0)
            return h @ p["fc2.weight"] + p["fc2.bias"], h
        return x @ p["fc.weight"] + p["fc.bias"], None

    @staticmethod
    def _softmax_xent(logits: FloatArray, y: IntArray) -> tuple[float, FloatArray]:
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        prob = e / e.sum(axis=1, keepdims=True)
        n = len(y)
        loss = -_mean(np.log(prob[np.arange(n), y] + 1e-12))
        grad = prob
        grad[np.arange(n), y] -= 1.0
        return loss, (grad / n).astype(np.float32)

    @staticmethod
    def _softmax_loss(logits: FloatArray, y: IntArray) -> float:
        """:meth:`_softmax_xent`'s loss alone, bit for bit: an evaluation needs no gradient, and the loss
        needs only each row's true-class probability, so the full normalised matrix is never built."""
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        rows = np.arange(len(y))
        prob_y = e[rows, y] / e.sum(axis=1)
        return -_mean(np.log(prob_y + 1e-12))

    def _next_batch(self) -> IntArray:
        if self._cursor >= len(self._order):
            self._order = self._rng.permutation(len(self.train_data))
            self._cursor = 0
        idx = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return idx

    def train(self, steps: int) -> TrainResult:
        with self._lock:
            p, v = self._params, self._velocity
            # a poisoned model may overflow here: the peer discards non-finite results, no warning needed
            with np.errstate(over="ignore", invalid="ignore"):
                total, seen = self._train_steps(p, v, steps)
            self.lr = max(self.lr_min, self.lr * self.lr_decay)
            return TrainResult(loss=total / max(steps, 1), samples=seen, steps=steps)

    def _train_steps(self, p: Params, v: Params, steps: int) -> tuple[float, int]:
        if self.dp is not None:
            from p2pfl.privacy.dpsgd import numpy_dp_steps

            return numpy_dp_steps(self, p, v, steps, self.dp)
        total = 0.0
        seen = 0
        start = {k: w.copy() for k, w in p.items()} if self.prox else None
        for _ in range(steps):
            idx = self._next_batch()
            x, y = self.train_data.x[idx], self.train_data.y[idx]
            logits, h = self._forward(p, x)
            loss, g = self._softmax_xent(logits, y)
            total += loss
            seen += len(idx)
            grads: Params
            if self.hidden:
                assert h is not None
                gh = (g @ p["fc2.weight"].T) * (h > 0)
                grads = {
                    "fc2.weight": h.T @ g,
                    "fc2.bias": g.sum(axis=0),
                    "fc1.weight": x.T @ gh,
                    "fc1.bias": gh.sum(axis=0),
                }
            else:
                grads = {"fc.weight": x.T @ g, "fc.bias": g.sum(axis=0)}
            for k, grad in grads.items():
                gk = grad + self.weight_decay * p[k] if self.weight_decay else grad
                if start is not None:
                    gk = gk + self.prox * (p[k] - start[k])
                v[k] = (self.momentum * v[k] + gk).astype(np.float32)
                p[k] = (p[k] - self.lr * v[k]).astype(np.float32)
        return total, seen

    def evaluate(self, params: Mapping[str, npt.NDArray[Any]] | None = None) -> EvalResult:
        with self._lock:
            p = self._params if params is None else params
            return self._evaluate_on(p, self.val_data)

    def evaluate_on(self, data: Dataset, params: Mapping[str, npt.NDArray[Any]] | None = None) -> EvalResult:
        """Evaluate on any dataset (e.g. a simulation's global test set)."""
        with self._lock:
            return self._evaluate_on(self._params if params is None else params, data)

    def accuracy_on(
        self, data: Dataset, params: Mapping[str, npt.NDArray[Any]] | None = None
    ) -> float | None:
        """:meth:`evaluate_on`'s accuracy alone, without the loss's softmax over the whole set: what a
        simulation records for every peer each round (10,000 peers x 10,000 test samples)."""
        with self._lock:
            if len(data) == 0:
                return None
            with np.errstate(over="ignore", invalid="ignore"):
                logits, _ = self._forward(self._params if params is None else params, data.x)
                return _fraction(logits.argmax(axis=1) == data.y)

    def predict_proba(
        self, x: npt.NDArray[Any], params: Mapping[str, npt.NDArray[Any]] | None = None
    ) -> FloatArray:
        with self._lock:
            p = self._params if params is None else params
            with np.errstate(over="ignore", invalid="ignore"):
                logits, _ = self._forward(p, np.asarray(x, np.float32))
                return _softmax(logits)

    def validation_data(self) -> tuple[FloatArray, IntArray]:
        return self.val_data.x, self.val_data.y

    def _evaluate_on(self, p: Mapping[str, npt.NDArray[Any]], data: Dataset) -> EvalResult:
        if len(data) == 0:
            return EvalResult(loss=float("nan"), accuracy=None, samples=0)
        # a neighbour's (maybe poisoned) model may overflow: a non-finite loss (scored 0), not a warning
        with np.errstate(over="ignore", invalid="ignore"):
            logits, _ = self._forward(p, data.x)
            loss = self._softmax_loss(logits, data.y)
            answers = logits.argmax(axis=1)
            acc = _fraction(answers == data.y)
        predicted = tuple(int(n) for n in np.bincount(answers, minlength=logits.shape[1]))
        return EvalResult(loss=loss, accuracy=acc, samples=len(data), predicted=predicted)


# TorchLearner lives in p2pfl.learner_torch (which builds on this module); ``from p2pfl.learner import
# TorchLearner`` keeps working, resolved on first access. Hidden from type checkers: they see the import
# above.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        if name == "TorchLearner":
            from p2pfl.learner_torch import TorchLearner

            return TorchLearner
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
