"""A small learning network of sans-I/O engines for attack tests: real softmax regression on digits, a fake
clock (one round per second), synchronous delivery, and attackers as bare engines publishing what they like.

Honest peers train on IID shares of digits, score their candidates by validation loss exactly as the peer
does (``val_losses`` of each candidate on the own validation split, ``own_val_loss`` of the trained model)
and mix. Attackers are engines with identities of their own that only publish. Everything is seeded: two
runs with the same arguments give the same numbers, so an attacked run can be compared to a clean one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_digits

from p2pfl.identity import Identity
from p2pfl.learner import Dataset, NumpySoftmaxLearner
from p2pfl.protocol import Action, FetchPayload, GossipEngine, ProtocolConfig, Publish, RequestSnapshot
from p2pfl.protocol.replicas import RoundOutcome
from p2pfl.scoring import ScoringConfig

Params = dict[str, npt.NDArray[Any]]
#: what an attacker publishes in a round, given the round and the mean of the honest public models
Behaviour = Callable[[int, Params], Params]


def _digits() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    d = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(d.target))
    return (d.data[order] / 16.0).astype(np.float32), d.target[order].astype(np.int64)


@dataclass
class LearningNet:
    """``honest`` learners and engines, ``attackers`` engines, the test set, and the outcomes per round."""

    n_honest: int = 4
    steps: int = 20
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        x, y = _digits()
        self.test = Dataset(x[:400], y[:400])
        rest_x, rest_y = x[400:], y[400:]
        self.learners: list[NumpySoftmaxLearner] = []
        self.engines: list[GossipEngine] = []
        share = len(rest_y) // self.n_honest
        for i in range(self.n_honest):
            px, py = rest_x[i * share : (i + 1) * share], rest_y[i * share : (i + 1) * share]
            cut = int(len(py) * 0.8)
            learner = NumpySoftmaxLearner(
                Dataset(px[:cut], py[:cut]), Dataset(px[cut:], py[cut:]), 10, lr=0.1, seed=self.seed + i
            )
            self.learners.append(learner)
        self.initial = self.learners[0].get_params()
        for i in range(self.n_honest):
            self.engines.append(self._engine(i + 1, scoring=self.scoring))
        self.attackers: list[GossipEngine] = []
        self.behaviours: list[Behaviour] = []
        self.now = 0.0
        self.round = 0
        self.outcomes: list[list[RoundOutcome]] = []

    def _engine(self, i: int, scoring: ScoringConfig | None = None) -> GossipEngine:
        """Every engine starts from the same initial model (the learners' zeros)."""
        return GossipEngine(
            Identity(i.to_bytes(2, "big") * 16),
            ProtocolConfig(network_id="learn"),
            self.initial,
            scoring=scoring,
            scoring_enabled=scoring is not None,
        )

    def add_attackers(self, count: int, behaviour: Behaviour) -> list[GossipEngine]:
        """``count`` fresh identities that from now on publish ``behaviour(round, clean)`` each round."""
        first = 1000 + len(self.attackers)
        new = [self._engine(first + j) for j in range(count)]
        self.attackers += new
        self.behaviours += [behaviour] * count
        return new

    def remove_attackers(self) -> None:
        """The attackers stop publishing (their replicas age out by ``max_staleness_s``)."""
        self.behaviours = [_silent] * len(self.attackers)

    # ------------------------------------------------------------------------------------ running

    def _deliver(self, src: GossipEngine, actions: list[Action]) -> None:
        by_id = {e.peer_id: e for e in [*self.engines, *self.attackers]}
        queue = [(src, a) for a in actions]
        for _ in range(10_000):
            if not queue:
                return
            origin, action = queue.pop(0)
            if isinstance(action, Publish):
                for e in self.engines:  # only honest engines listen
                    if e is not origin:
                        queue += [
                            (e, a) for a in e.handle_announce(action.envelope, origin.peer_id, self.now)
                        ]
            elif isinstance(action, RequestSnapshot):
                snap = by_id[action.peer].serve_snapshot(0)
                queue += [(origin, a) for a in origin.handle_snapshot(snap, action.peer, self.now)]
            elif isinstance(action, FetchPayload):
                payload = by_id[action.peer].serve_payload(action.header.payload_digest)
                if payload is not None:
                    queue += [(origin, a) for a in origin.handle_payload(action.header, payload, self.now)]
        raise AssertionError("actions did not settle")

    def step(self) -> list[RoundOutcome]:
        """One round: every attacker publishes; every honest peer trains, scores, mixes. An attacker's
        "clean" model is the mean of the honest public models (it receives them like any neighbour): the most
        honest-looking model there is."""
        self.round += 1
        self.now = float(self.round)
        publics = [e.public_params() for e in self.engines]
        clean = {k: np.mean([p[k] for p in publics], axis=0).astype(np.float32) for k in publics[0]}
        for engine, behaviour in zip(self.attackers, self.behaviours, strict=True):
            params = behaviour(self.round, clean)
            if params:
                self._deliver(engine, engine.finish_round(params, self.now).actions)
        outcomes = []
        for learner, engine in zip(self.learners, self.engines, strict=True):
            learner.set_params(engine.own_params())
            learner.train(self.steps)
            trained = learner.get_params()
            candidates = engine.mixing_candidates(self.now)
            losses = {r.peer: learner.evaluate(engine.layout.unflatten(r.vec)).loss for r in candidates}
            out = engine.finish_round(
                trained,
                self.now,
                val_losses=losses,
                own_val_loss=learner.evaluate(trained).loss,
                candidates=candidates,
            )
            outcomes.append(out)
            self._deliver(engine, [a for a in out.actions if isinstance(a, Publish)])
        self.outcomes.append(outcomes)
        return outcomes

    def accuracy(self) -> list[float]:
        """Each honest peer's own model's accuracy on the held-out test set."""
        out = []
        for learner, engine in zip(self.learners, self.engines, strict=True):
            acc = learner.evaluate_on(self.test, engine.own_params()).accuracy
            out.append(float(acc) if acc is not None else 0.0)
        return out

    def attacker_ids(self) -> set[str]:
        return {e.peer_id for e in self.attackers}


def _silent(_round: int, _clean: Params) -> Params:
    return {}


def permuted(noise: float, seed: int) -> Behaviour:
    """Publish a model trained on permuted labels (``y -> (y + 1) % 10``): the output columns rolled, which is
    exactly that model for softmax regression, plus a little per-version noise so every digest differs."""
    rng = np.random.default_rng(seed)

    def behave(_round: int, clean: Params) -> Params:
        return {
            k: (np.roll(v, 1, axis=-1) + rng.standard_normal(v.shape) * noise).astype(np.float32)
            for k, v in clean.items()
        }

    return behave


def honest_then(attack: Callable[[Params], Params], until: int, seed: int) -> Behaviour:
    """Publish the clean model (with a little noise) up to round ``until``, then ``attack(clean)``."""
    rng = np.random.default_rng(seed)

    def behave(round_: int, clean: Params) -> Params:
        base = clean if round_ <= until else attack(clean)
        return {k: (v + rng.standard_normal(v.shape) * 1e-3).astype(np.float32) for k, v in base.items()}

    return behave


def sign_flip(scale: float) -> Callable[[Params], Params]:
    """``-scale`` times the clean model: it points every class the wrong way."""
    return lambda clean: {k: (-scale * v).astype(np.float32) for k, v in clean.items()}


def shares(outcome: RoundOutcome, peers: set[str]) -> float:
    """The share of ``outcome``'s mix held by ``peers``."""
    own = getattr(outcome, "own_weight", 1.0)  # (an engine without share caps mixes the own model at 1)
    total = own + sum(c.weight for c in outcome.contributions)
    return sum(c.weight for c in outcome.contributions if c.peer in peers) / total


def mean(values: Mapping[int, float] | list[float]) -> float:
    vals = list(values.values()) if isinstance(values, Mapping) else values
    return float(np.mean(vals))
