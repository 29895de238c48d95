"""The ``[evidence]`` section: observations relayed as hints, in the memory engine (p2pfl.scoring.evidence).

A prototype of the delivery, to measure whether the evidence earns its complexity before it gets a wire
message: an in-process hub stands in for a gossip topic. Each honest peer, at the end of every round and
before it mixes, measures its candidates' per-class loss on its own validation data
(:func:`~p2pfl.scoring.evidence.assess`), hands its observations to the hub, and the hub floods them over the
topology's links for at most ``hops`` hops (each honest peer relays what it kept once; attackers relay
nothing). Authenticity is the hub's (each observation comes from the peer that made it): the wire message
would carry the observer's signature. The receiver's :class:`~p2pfl.scoring.evidence.EvidenceBook` gives the
scorer its bounded weight factor (``ContributionScorer.weight_hint``); trust in an observer is the
receiver's reputation of it when it is an established, active neighbour (0 otherwise), 1 for itself, and
a relayed observation is capped at ``relayed_trust`` and the relay's trust.

``accuse = true`` makes the attackers adaptive against the evidence itself: every round each attacker
publishes full-severity observations against each honest neighbour, on classes that neighbour's receivers
cannot check (absent from their validation data), and the attackers relay each other's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from p2pfl.errors import ConfigError
from p2pfl.scoring.evidence import (
    ClassLosses,
    EvidenceBook,
    EvidenceConfig,
    Observation,
    Streaks,
    assess,
    class_losses,
    ratios,
)

from .scenario_attacks import ScenarioError, _get


@dataclass(frozen=True)
class EvidenceSpec:
    enabled: bool = False
    hops: int = 6
    accuse: bool = False
    #: measurement only: the hint is perfect (every attacker at the bound, no honest peer), an upper bound on
    #: what any evidence could buy at this ``max_penalty``
    oracle: bool = False
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, t: Mapping[str, Any]) -> EvidenceSpec:
        known = {f.name for f in dataclasses.fields(EvidenceConfig)} - {"enabled"}
        for k in t:
            if k not in known | {"enabled", "hops", "accuse", "oracle"}:
                raise ScenarioError("evidence", k, "unknown key")
        params = tuple((k, t[k]) for k in sorted(known) if k in t)
        s = "evidence"
        hops = _get(t, s, "hops", int, 6)
        if hops < 1:
            raise ScenarioError(s, "hops", f"at least 1, got {hops}")
        flags = (_get(t, s, k, bool, False) for k in ("enabled", "accuse", "oracle"))
        enabled, accuse, oracle = flags
        spec = cls(enabled, hops, accuse, oracle, params)
        try:
            spec.config()
        except (ConfigError, TypeError) as exc:
            raise ScenarioError(s, "params", str(exc)) from exc
        return spec

    def config(self) -> EvidenceConfig:
        return EvidenceConfig(enabled=self.enabled, **dict(self.params))

    def to_dict(self) -> dict[str, Any]:
        out = {"enabled": self.enabled, "hops": self.hops, "accuse": self.accuse, "oracle": self.oracle}
        return {**out, **dict(self.params)}


class EvidenceHub:
    """Delivers observations between the memory engine's peers along the topology's links."""

    def __init__(self, spec: EvidenceSpec, peer_ids: list[str], neighbours: list[set[int]], honest: set[int]):
        self.spec = spec
        self.config = spec.config()
        self.ids = peer_ids
        self.neighbours = neighbours
        self.honest = honest
        self.books: dict[int, EvidenceBook] = {}
        self.rounds: dict[int, int] = {}
        self.classes_held: dict[int, set[int]] = {}
        self.checked: dict[int, dict[str, dict[int, float]]] = {}
        self.attackers = {p for i, p in enumerate(peer_ids) if i not in honest}
        self.n_classes = 2
        self._accused = 0
        self.stats = {"published": 0, "delivered": 0, "kept": 0, "accusations": 0}

    def bind(self, peer: Any, index: int, learner: Any) -> None:
        """Hook peer ``index``'s engine (honest peers observe and use evidence; attackers may accuse)."""
        engine = peer.engine
        scorer = engine.scorer
        if index not in self.honest:
            if self.spec.accuse:
                finish = engine.finish_round

                def accusing(*args: Any, **kwargs: Any) -> Any:
                    self._accuse(index)
                    return finish(*args, **kwargs)

                engine.finish_round = accusing
            return
        if scorer is None:
            return
        book = self.books.setdefault(index, EvidenceBook(self.ids[index], self.config))
        streaks = Streaks(self.config)
        self.rounds.setdefault(index, 0)
        x, y = learner.validation_data()
        self.n_classes = max(self.n_classes, int(learner.predict_proba(x[:1]).shape[1]))
        self.classes_held[index] = {
            int(c)
            for c, n in zip(*np.unique(y, return_counts=True), strict=True)
            if n >= self.config.min_samples
        }
        neighbour_ids = {self.ids[j] for j in self.neighbours[index]}

        def trust(p: str) -> float:
            if p == self.ids[index]:
                return 1.0
            if p not in neighbour_ids:
                return 1.0  # heard only through a relay: capped there (EvidenceBook.hint)
            if not scorer.is_established(p) or not scorer.is_admitted(p):
                return 0.0
            return float(scorer.reputation(p))

        if self.spec.oracle:
            floor = 1.0 - self.config.max_penalty
            scorer.weight_hint = lambda p: floor if p in self.attackers else 1.0
            return
        scorer.weight_hint = lambda p: book.factor(
            p, self.rounds[index], trust, self.checked.get(index, {}).get(p)
        )
        finish = engine.finish_round

        def observing(trained: Any, *args: Any, **kwargs: Any) -> Any:
            self.rounds[index] += 1
            book.prune(self.rounds[index])
            candidates = kwargs.get("candidates") or []
            if candidates:
                own = class_losses(learner.predict_proba(x, trained), y)
                models: dict[str, tuple[int, bytes, ClassLosses]] = {}
                for r in candidates:
                    proba = learner.predict_proba(x, engine.layout.unflatten(r.vec.copy()))
                    models[r.peer] = (r.seq, r.digest, class_losses(proba, y))
                self.checked[index] = ratios(own, {p: v[2] for p, v in models.items()}, self.config)
                found = assess(self.ids[index], self.rounds[index], own, models, self.config)
                for obs in streaks.filter({p: v[0] for p, v in models.items()}, found):
                    self.publish(index, obs)
            return finish(trained, *args, **kwargs)

        engine.finish_round = observing

    def publish(self, origin: int, obs: Observation) -> None:
        """Flood ``obs`` from ``origin`` (which keeps it itself) for at most ``hops`` links."""
        self.stats["published"] += 1
        if origin in self.books:
            self.books[origin].record(obs, self.rounds[origin])
        seen = {origin}
        frontier = [(origin, j) for j in sorted(self.neighbours[origin])]
        for _hop in range(self.spec.hops):
            nxt: list[tuple[int, int]] = []
            for via, j in frontier:
                if j in seen:
                    continue
                seen.add(j)
                if j not in self.honest:
                    if self.spec.accuse and obs.observer in self.attackers:
                        nxt.extend((j, k) for k in sorted(self.neighbours[j]))  # attackers relay their own
                    continue
                book = self.books.get(j)
                if book is None:
                    continue
                self.stats["delivered"] += 1
                relay = None if via == origin else self.ids[via]
                if book.record(obs, self.rounds[j], relay) == "kept":
                    self.stats["kept"] += 1
                    nxt.extend((j, k) for k in sorted(self.neighbours[j]))
            frontier = nxt
            if not frontier:
                break

    def _accuse(self, index: int) -> None:
        """The adaptive attacker: full-severity accusations against every honest neighbour, on classes its
        other neighbours cannot check."""
        for j in sorted(self.neighbours[index]):
            if j not in self.honest:
                continue
            held = set().union(
                *(self.classes_held.get(k, set()) for k in self.neighbours[j] if k in self.honest)
            )
            blind = [c for c in range(self.n_classes) if c not in held] or [0]
            self._accused += 1  # ever newer: never "older" than the last accusation
            obs = Observation(
                self.ids[index], self.ids[j], self._accused, b"\0" * 32, self._accused, ((blind[0], 1e9),)
            )
            self.stats["accusations"] += 1
            self.publish(index, obs)
