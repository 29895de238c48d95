"""Model-poisoning attacks: wrappers around an honest learner (:mod:`simulations.attacks` gives them to the
attacker peers of a scenario).

A Byzantine peer runs the same :class:`p2pfl.peer.Peer` code as an honest one; for these attacks its learner
differs: the wrapper returns a poisoned model from ``get_params`` right after local training, and that is
what the peer publishes as its new version:

- ``signflip``: ``start - scale * (trained - start)`` (the local update reversed and amplified);
- ``gaussian``: ``trained + sigma * N(0, 1)`` per coordinate;
- ``labelflip``: honest training on flipped labels (``y -> C - 1 - y``) of its own private data;
- ``alie`` ("a little is enough", Baruch et al. 2019): ``mean - z * std`` of the neighbours' models,
  coordinate-wise, which hides inside the spread of honest models;
- ``ipm`` (inner-product manipulation, Xie et al. 2020): ``start - epsilon * (mean - start)``, i.e. the
  neighbours' average update reversed and scaled by ``epsilon``;
- ``labelperm``: honest training on labels permuted by one fixed cycle of the classes (no class keeps its
  label), the same permutation for every attacker of a run, so colluding Sybils agree with each other;
- ``honest_then_attack``: honest for ``honest_rounds`` trained rounds, then ``signflip`` or ``alie``
  (a sleeper: it earns whatever trust good behaviour earns first);
- ``extreme``: a finite model whose every coordinate is about ``extreme_value`` (-1e38 by default);
- ``mimic`` (Karimireddy et al. 2022): a verbatim copy of one honest neighbour's latest public model, the
  same neighbour every round, so that neighbour's (skewed) data count several times in every mix that takes
  the copies: no model it publishes is outside the honest spread;
- ``dissensus`` (He et al. 2022): ``x_t + lambda * (x_t - m)``, with ``m`` the mean of its honest
  neighbours' models and ``x_t`` the one farthest from ``m``: mixing it pulls ``t`` further away from the
  consensus and drags the other neighbours the same way (see :class:`Dissensus`).

``alie``, ``ipm``, ``mimic`` and ``dissensus`` are **omniscient within the neighbourhood**: they read the
attacker peer's replicas of its neighbours' public models (exactly what that peer legitimately receives;
colluders' models included) through read-only callables set by
:meth:`simulations.attacks.Behaviour.bind` after the peer is created. They do not see models of peers they
are not connected to, nor honest models before they are published. ``mimic`` and ``dissensus`` also know
their colluders (``Behaviour(colluders=...)``) and leave their models out of what they copy or push.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from p2pfl.learner import Dataset, EvalResult, TrainResult, reset_optimizer

Params = dict[str, npt.NDArray[np.float32]]
ReplicaView = Callable[[], list[Params]]
#: the same replicas, by the neighbour's peer id
KeyedView = Callable[[], dict[str, Params]]


class _Wrapper:
    """Delegates everything to the honest learner; subclasses poison what ``get_params`` returns."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._start: Params | None = None
        self._trained = False

    def set_params(self, params: Mapping[str, npt.NDArray[Any]]) -> None:
        self._start = {k: np.array(v, dtype=np.float32) for k, v in params.items()}
        self._trained = False
        self.inner.set_params(params)

    def train(self, steps: int) -> TrainResult:
        result: TrainResult = self.inner.train(steps)
        self._trained = True
        return result

    def get_params(self) -> Params:
        params: Params = self.inner.get_params()
        if self._start is None or not self._trained:
            return params  # the initial model, or a read outside a round: nothing to poison
        return self.poison(self._start, params)

    def poison(self, start: Params, trained: Params) -> Params:
        return trained

    def reset_optimizer(self) -> None:
        """As the honest learner does after a diverged round (p2pfl.learner.ResettableLearner)."""
        reset_optimizer(self.inner)

    def evaluate(self, params: Mapping[str, npt.NDArray[Any]] | None = None) -> EvalResult:
        result: EvalResult = self.inner.evaluate(params)
        return result

    def evaluate_on(self, data: Dataset, params: Mapping[str, npt.NDArray[Any]] | None = None) -> EvalResult:
        result: EvalResult = self.inner.evaluate_on(data, params)
        return result


class SignFlip(_Wrapper):
    def __init__(self, inner: Any, scale: float = 4.0) -> None:
        super().__init__(inner)
        self.scale = scale

    def poison(self, start: Params, trained: Params) -> Params:
        return {k: (start[k] - self.scale * (trained[k] - start[k])).astype(np.float32) for k in trained}


class Gaussian(_Wrapper):
    def __init__(self, inner: Any, sigma: float = 1.0, seed: int = 0) -> None:
        super().__init__(inner)
        self.sigma = sigma
        self._rng = np.random.default_rng(seed)

    def poison(self, start: Params, trained: Params) -> Params:
        return {
            k: (v + self.sigma * self._rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in trained.items()
        }


class LabelFlip(_Wrapper):
    """Trains on its own data with labels flipped ``y -> C - 1 - y`` (needs a learner with ``train_data``
    and ``n_classes``, like :class:`p2pfl.learner.NumpySoftmaxLearner`); publishes what it trained.

    ``fraction < 1`` flips only that share of the samples (drawn once from ``seed``): the attacker that
    knows the loss signal trades damage for a model whose loss on other peers' data stays lower."""

    def __init__(self, inner: Any, fraction: float = 1.0, seed: int = 0) -> None:
        super().__init__(inner)
        data: Dataset = inner.train_data
        y = np.asarray(data.y, dtype=np.int64).copy()
        flip = np.ones(len(y), dtype=bool)
        if fraction < 1.0:
            chosen = np.random.default_rng(seed).permutation(len(y))[: round(fraction * len(y))]
            flip = np.zeros(len(y), dtype=bool)
            flip[chosen] = True
        y[flip] = inner.n_classes - 1 - y[flip]
        inner.train_data = Dataset(data.x, y)


class _Omniscient(_Wrapper):
    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.view: ReplicaView | None = None
        self.keyed: KeyedView | None = None
        #: peer ids of the other attackers (their models are not honest evidence)
        self.colluders: frozenset[str] = frozenset()

    def _neighbours(self) -> list[Params]:
        return self.view() if self.view is not None else []

    def _honest_neighbours(self) -> dict[str, Params]:
        models = self.keyed() if self.keyed is not None else {}
        return {p: m for p, m in sorted(models.items()) if p not in self.colluders}


def _flat(params: Params) -> npt.NDArray[np.float64]:
    return np.concatenate([np.asarray(params[k], np.float64).ravel() for k in sorted(params)])


class ALIE(_Omniscient):
    """``mean - z * std`` of the neighbours' models, coordinate-wise (Baruch et al. 2019).

    ``signs = "random"`` is the adaptive form against the heading signal's shift test
    (p2pfl/scoring/heading.py): each coordinate is shifted by its spread in a sign drawn once per attacker
    (``seed``) and kept for the run, so the shift still points the same way every round but no longer
    along the spread's own sign pattern."""

    def __init__(self, inner: Any, z: float = 1.0, signs: str = "fixed", seed: int = 0) -> None:
        super().__init__(inner)
        self.z = z
        self.signs = signs
        self._rng = np.random.default_rng(seed)
        self._sign: dict[str, npt.NDArray[np.float32]] = {}

    def _signs(self, key: str, shape: tuple[int, ...]) -> npt.NDArray[np.float32] | float:
        if self.signs != "random":
            return 1.0
        if key not in self._sign or self._sign[key].shape != shape:
            self._sign[key] = self._rng.choice(np.array([-1.0, 1.0], np.float32), size=shape)
        return self._sign[key]

    def poison(self, start: Params, trained: Params) -> Params:
        models = self._neighbours()
        if len(models) < 2:
            return trained
        out = {}
        for k in trained:
            stack = np.stack([m[k] for m in models])
            shift = self._signs(k, stack.shape[1:]) * stack.std(axis=0)
            out[k] = (stack.mean(axis=0) - self.z * shift).astype(np.float32)
        return out


class IPM(_Omniscient):
    """``start - epsilon * (mean - start)``: the neighbours' average update reversed (Xie et al. 2020).

    ``evade_lag`` is the adaptive form against the heading signal's lag test (p2pfl/scoring/heading.py):
    the attacker estimates the consensus's progress as a moving average (0.7) of the change of its
    neighbours' mean between its versions, and drops the component of its offset from that mean that points
    back along it (the rest of the push is kept). ``lag_floor`` (above -1) is the form that knows the test's
    thresholds: it keeps as much of the push back along that progress as leaves the cosine of its offset
    with it at ``lag_floor`` (e.g. -0.25, just above ``heading_lag_ok``: never held, never counted by the
    test's gate), and the rest of the push as it is. ``ahead`` is the colluder that attacks the gate
    itself: it publishes ``mean + epsilon * (mean - start)``, the neighbours' update extrapolated forward,
    so the median of a peer it shares with IPM colluders runs ahead of that peer's own trained model, which
    then lags behind the centre's motion and the lag test stands down (``[attack] ipm_gate_breakers``:
    every attacker with an odd seed does this, the others plain IPM)."""

    def __init__(
        self,
        inner: Any,
        epsilon: float = 0.5,
        evade_lag: bool = False,
        lag_floor: float = -1.0,
        *,
        ahead: bool = False,
    ) -> None:
        super().__init__(inner)
        self.epsilon = -(1.0 + epsilon) if ahead else epsilon  # ahead: start + (1 + eps) (mean - start)
        self.evade_lag = evade_lag
        self.lag_floor = 0.0 if evade_lag else lag_floor
        self._last_mean: npt.NDArray[np.float64] | None = None
        self._progress: npt.NDArray[np.float64] | None = None

    def poison(self, start: Params, trained: Params) -> Params:
        models = self._neighbours()
        if not models:
            return trained
        keys = sorted(trained)
        mean = {k: np.mean([m[k] for m in models], axis=0) for k in keys}
        out = {k: (start[k] - self.epsilon * (mean[k] - start[k])).astype(np.float32) for k in keys}
        if self.lag_floor <= -1.0:
            return out
        centre = _flat(mean)
        if self._last_mean is not None and self._last_mean.shape == centre.shape:
            step = centre - self._last_mean
            self._progress = step if self._progress is None else 0.7 * self._progress + 0.3 * step
        self._last_mean = centre
        p = self._progress
        if p is None or not float(p @ p) > 0:
            return out
        u = p / math.sqrt(float(p @ p))
        offset = _flat(out) - centre
        along = float(offset @ u)
        rest = offset - along * u
        floor = self.lag_floor
        # the most negative component along u that keeps cos(offset, u) >= floor
        least = floor * math.sqrt(float(rest @ rest)) / math.sqrt(1.0 - floor * floor) if floor < 0 else 0.0
        if along >= least:
            return out
        fixed = centre + rest + least * u
        pos = 0
        for k in keys:
            n = out[k].size
            out[k] = fixed[pos : pos + n].reshape(out[k].shape).astype(np.float32)
            pos += n
        return out


class Mimic(_Omniscient):
    """Publishes a copy of one honest neighbour's latest public model (Karimireddy et al. 2022, "mimic").

    The target is chosen once, at the first round with at least one honest neighbour's model: the one with
    the largest deviation along the principal direction of the honest neighbours' models (the paper's choice:
    the worker whose data most pull the mean one way; with one or two neighbours, the farthest from their
    mean). It is kept while its replica exists, so the same data are over-represented round after round;
    only when it disappears (evicted, left) is a new target chosen. Colluders that neighbour the same peers
    tend to pick the same target. A mimic model is a real honest model: it differs from the target's only
    by being one version late, so a defence can only notice duplicates, not a bad model."""

    def __init__(self, inner: Any, noise: float = 0.0, seed: int = 0) -> None:
        super().__init__(inner)
        self.target: str | None = None
        #: the adaptive form against copies counting once (``[scoring] copies_ratio``): noise of this many
        #: lengths of the own update, in a random direction per version (0: a verbatim copy)
        self.noise = noise
        self._rng = np.random.default_rng(seed)

    @staticmethod
    def pick(models: dict[str, Params]) -> str:
        ids = sorted(models)
        x = np.stack([_flat(models[p]) for p in ids])
        dev = x - x.mean(axis=0)
        if len(ids) > 2:
            _, _, vt = np.linalg.svd(dev, full_matrices=False)
            score = np.abs(dev @ vt[0])
        else:
            score = np.linalg.norm(dev, axis=1)
        return ids[int(np.argmax(score))]  # ties: the smallest peer id (argmax keeps the first)

    def poison(self, start: Params, trained: Params) -> Params:
        models = self._honest_neighbours()
        if not models:
            return trained
        if self.target not in models:
            self.target = self.pick(models)
        copy = {k: np.asarray(v, dtype=np.float64) for k, v in models[self.target].items()}
        if self.noise > 0:
            step = float(np.linalg.norm(_flat(trained) - _flat(start)))
            dirs = {k: self._rng.standard_normal(v.shape) for k, v in copy.items()}
            norm = float(np.sqrt(sum(float(np.sum(d * d)) for d in dirs.values()))) or 1.0
            copy = {k: v + self.noise * step * dirs[k] / norm for k, v in copy.items()}
        return {k: v.astype(np.float32) for k, v in copy.items()}


class Dissensus(_Omniscient):
    """Pushes its neighbours away from their consensus (He et al. 2022, "dissensus").

    In the paper each attacker sends neighbour ``i`` the model ``x_i - eps * sum_k w_ik (x_k - x_i)``: the
    reverse of ``i``'s own consensus step. A peer here signs one model per version for all its neighbours
    (a different model per neighbour is equivocation, which the protocol detects: see ``equivocate``), so
    the attack aims that one model at the honest neighbour ``t`` farthest from the honest neighbours' mean
    ``m`` (its own neighbourhood stands in for ``t``'s, which it cannot see) and publishes
    ``x_t + lam * (x_t - m)``: ``t`` mixing it moves away from ``m``, and every other neighbour mixing it
    is pulled towards ``t``'s side and past it. The model is ``(1 + lam)`` times ``t``'s distance from
    ``m`` away from ``m``: with ``lam`` about 1, within the spread of honest neighbours on skewed data."""

    def __init__(self, inner: Any, lam: float = 1.0, evade_echo: bool = False, from_round: int = 0) -> None:
        super().__init__(inner)
        self.lam = lam
        self.target: str | None = None
        #: the adaptive form against drift trust (p2pfl/scoring/badrun.py): honest trained models for the
        #: first ``from_round`` own rounds (the victims earn their honest neighbours' trust), then the push
        #: at once, so a victim with an attacker majority is dragged in a jump
        self.from_round = from_round
        self.rounds_trained = 0
        #: the adaptive form against the echo signal (p2pfl/scoring/echo.py): the push loses its component
        #: along the target's last public step (its own update as the attacker can see it)
        self.evade_echo = evade_echo
        #: each honest neighbour's last two distinct versions seen (latest, the one before)
        self._versions: dict[str, tuple[Params, Params | None]] = {}

    def train(self, steps: int) -> TrainResult:
        self.rounds_trained += 1
        return super().train(steps)

    def poison(self, start: Params, trained: Params) -> Params:
        models = self._honest_neighbours()
        if len(models) < 2 or (self.from_round and self.rounds_trained <= self.from_round):
            return trained
        ids = sorted(models)
        mean = {k: np.mean([models[p][k] for p in ids], axis=0) for k in trained}
        dist = [sum(float(np.sum((models[p][k] - mean[k]) ** 2)) for k in trained) for p in ids]
        self.target = ids[int(np.argmax(dist))]
        xt = models[self.target]
        push = {k: self.lam * (xt[k] - mean[k]) for k in trained}
        if not self.evade_echo:
            return {k: (xt[k] + push[k]).astype(np.float32) for k in trained}
        for p in ids:  # a view without a newer version of ``p`` keeps its last step
            latest, _ = self._versions.get(p, (None, None))
            if latest is None or any(not np.array_equal(latest[k], models[p][k]) for k in trained):
                self._versions[p] = (models[p], latest)
        previous = self._versions[self.target][1]
        if previous is not None:
            step = {k: xt[k] - previous[k] for k in trained}
            norm2 = sum(float(np.sum(step[k].astype(np.float64) ** 2)) for k in trained)
            if norm2 > 0:
                along = sum(float(np.sum(push[k].astype(np.float64) * step[k])) for k in trained) / norm2
                push = {k: push[k] - along * step[k] for k in trained}
        return {k: (xt[k] + push[k]).astype(np.float32) for k in trained}


def class_cycle(n_classes: int, seed: int) -> npt.NDArray[np.int64]:
    """A permutation of ``range(n_classes)`` that is one cycle through every class: no label is kept."""
    order = np.random.default_rng(seed).permutation(n_classes)
    perm = np.empty(n_classes, np.int64)
    perm[order] = np.roll(order, -1)
    return perm


class LabelPerm(_Wrapper):
    """Trains on its own data with labels mapped through :func:`class_cycle` (``perm_seed``: shared by the
    colluders of a run); publishes what it trained."""

    def __init__(self, inner: Any, perm_seed: int = 0) -> None:
        super().__init__(inner)
        data: Dataset = inner.train_data
        self.perm = class_cycle(int(inner.n_classes), perm_seed)
        inner.train_data = Dataset(data.x, self.perm[data.y].astype(np.int64))


class HonestThenAttack(_Omniscient):
    """Publishes its honest training for ``honest_rounds`` rounds, then sign-flips (``then="signflip"``,
    with ``scale``) or plays ALIE (``then="alie"``, with ``z``)."""

    def __init__(self, inner: Any, honest_rounds: int, then: str, scale: float = 4.0, z: float = 1.0) -> None:
        super().__init__(inner)
        self.honest_rounds = honest_rounds
        self.then = then
        self.rounds_trained = 0
        self._flip = SignFlip(inner, scale)
        self._alie = ALIE(inner, z)

    def train(self, steps: int) -> TrainResult:
        self.rounds_trained += 1
        return super().train(steps)

    @property
    def attacking(self) -> bool:
        return self.rounds_trained > self.honest_rounds

    def poison(self, start: Params, trained: Params) -> Params:
        if not self.attacking:
            return trained
        if self.then == "alie":
            self._alie.view = self.view
            return self._alie.poison(start, trained)
        return self._flip.poison(start, trained)


class Extreme(_Wrapper):
    """Publishes a finite model of about ``value`` in every coordinate (relative jitter 1e-3, so versions
    differ); its own training is skipped once it has poisoned (its model is garbage anyway)."""

    def __init__(self, inner: Any, value: float = -1e38, seed: int = 0) -> None:
        super().__init__(inner)
        self.value = value
        self._rng = np.random.default_rng(seed)

    def train(self, steps: int) -> TrainResult:
        with np.errstate(all="ignore"):
            return super().train(steps)

    def poison(self, start: Params, trained: Params) -> Params:
        out = {}
        for k, v in trained.items():
            jitter = 1.0 + 1e-3 * self._rng.standard_normal(v.shape)
            out[k] = np.clip(self.value * jitter, -3.0e38, 3.0e38).astype(np.float32)
        return out
