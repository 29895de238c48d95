"""What learning on a matrix cell could reach with perfect or idealised mixing: the ceilings of issue 16.

``python -m p2pfl.sim.learning_oracle --topology dumbbell --alpha 0.1 --seed 2 [--mode fedavg|gossip|local]
[--steps 10] [--mix-steps 1] [--stale] [--geomed | --pipeline [--agg KEY=VALUE ...]] [--bucket S] [--prox P]
[--reset-velocity]``

The same learners, partition, graph and schedule as :mod:`simulations.bench_matrix` builds for the cell
(no attackers), trained in lock-step in one process with no protocol, scoring, pacing or network:

* ``fedavg``: after each round's local steps every peer takes the mean of *all* models (a perfect-mixing
  oracle: what only client drift from the local steps costs);
* ``gossip``: each peer takes the mean (``--geomed``: the geometric median; ``--pipeline``: the library's
  :func:`~p2pfl.aggregation.aggregate` with ``AggregationConfig(**--agg)``, i.e. self-clipping, NNM and the
  rule, without scoring weights) of its own and its neighbours' trained models of the same round (the
  ``wait_before_mix`` order), ``--mix-steps`` times per round;
  ``--stale`` mixes the neighbours' previous-round trained models instead (the default round order, where a
  peer mixes before its neighbours have published this round); ``--bucket S`` first averages the rows in
  random buckets of ``S`` (the own row with ``S - 1`` random neighbours first; Karimireddy et al. 2022's
  bucketing against heterogeneity) and mixes the bucket means;
* ``local``: no mixing at all.

Prints one JSON line: the cell, the options, and the honest mean / min test accuracy (%).
A measurement harness (docs/learning.md, "Dirichlet 0.1: what limits learning"); the peer code is unused.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from p2pfl.aggregation import AggregationConfig, aggregate

from . import bench_matrix as bm
from .plan import build_learner, load_splits, make_plan
from .scenario import load_scenario

Vec = NDArray[np.float64]


def geomed(rows: Vec, iterations: int = 50) -> Vec:
    """Weiszfeld's geometric median of ``rows`` (as the default rule, without clipping or weights)."""
    z: Vec = rows.mean(axis=0)
    for _ in range(iterations):
        w = 1.0 / np.maximum(np.linalg.norm(rows - z, axis=1), 1e-8)
        z = (w[:, None] * rows).sum(axis=0) / w.sum()
    return z


def _setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--agg``, the value read as TOML (``rule="median"``, ``f=1``, ``nnm=false``)."""
    key, _, value = text.partition("=")
    return key, tomllib.loads(f"v = {value}")["v"]


def bucketed(agg: Callable[[Vec], Vec], size: int, seed: int) -> Callable[[Vec], Vec]:
    """``agg`` over the means of random buckets of ``size`` rows: row 0 (the own model) with ``size - 1``
    neighbours drawn at random, then the other neighbours in random buckets of ``size`` (the last may be
    smaller). A fresh draw per call, reproducible from ``seed``. Size 1: ``agg`` itself."""
    rng = np.random.default_rng(seed)

    def mix(rows: Vec) -> Vec:
        if size <= 1:
            return agg(rows)
        order = np.concatenate(([0], 1 + rng.permutation(len(rows) - 1)))
        means = np.array([rows[order[i : i + size]].mean(axis=0) for i in range(0, len(order), size)])
        return agg(means)

    return mix


def _pipeline(config: AggregationConfig) -> Callable[[Vec], Vec]:
    """The peer's mix: row 0 is the own model, the others its neighbours', all of weight 1."""

    def mix(rows: Vec) -> Vec:
        out = aggregate(config, rows[0].astype(np.float32), rows[1:].astype(np.float32))
        return out.astype(np.float64)

    return mix


def run(args: argparse.Namespace) -> dict[str, object]:
    base = load_scenario(bm.MATRIX_BASE).replace(run={"rounds": args.rounds, "seed": args.seed})
    sc = bm.cell_scenario(base, bm.Cell("digits", args.alpha, args.topology, "0", "none", "default"))
    if args.prox:
        sc = sc.replace(model={"prox": args.prox})
    plan, splits = make_plan(sc), load_splits(sc)
    n = sc.topology.peers
    learners = [build_learner(sc, splits[i], i) for i in range(n)]
    neighbours = {p.index: list(p.neighbours) for p in plan.peers}
    first = learners[0].get_params()
    keys = list(first)
    shapes = {k: first[k].shape for k in keys}

    def flat(i: int) -> Vec:
        p = learners[i].get_params()
        return np.concatenate([p[k].ravel() for k in keys]).astype(np.float64)

    def unflat(x: Vec) -> dict[str, NDArray[np.float32]]:
        out, at = {}, 0
        for k in keys:
            size = int(np.prod(shapes[k]))
            out[k] = x[at : at + size].reshape(shapes[k]).astype(np.float32)
            at += size
        return out

    agg: Callable[[Vec], Vec] = geomed if args.geomed else (lambda rows: rows.mean(axis=0))
    if args.pipeline:
        agg = _pipeline(AggregationConfig(**dict(_setting(kv) for kv in args.agg)))
    agg = bucketed(agg, args.bucket, args.seed)
    previous = [flat(i) for i in range(n)]
    for _ in range(args.rounds):
        for lr in learners:
            if args.reset_velocity:
                lr._velocity = {k: np.zeros_like(v) for k, v in lr._velocity.items()}
            lr.train(args.steps)
        trained = [flat(i) for i in range(n)]
        models = trained
        if args.mode == "fedavg":
            models = [np.mean(trained, axis=0)] * n
        elif args.mode == "gossip":
            for step in range(args.mix_steps):
                held = previous if args.stale and step == 0 else models
                models = [agg(np.array([models[i]] + [held[j] for j in neighbours[i]])) for i in range(n)]
        previous = trained
        for i, x in enumerate(models):
            learners[i].set_params(unflat(x))
    accs = [float(lr.evaluate_on(splits[0].test).accuracy or 0.0) for lr in learners]
    return {
        **vars(args),
        "mean": round(100 * float(np.mean(accs)), 1),
        "min": round(100 * float(np.min(accs)), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m p2pfl.sim.learning_oracle", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--topology", default="dumbbell", choices=sorted(bm.TOPOLOGIES))
    ap.add_argument("--alpha", default="0.1")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--mode", default="gossip", choices=("fedavg", "gossip", "local"))
    ap.add_argument("--steps", type=int, default=10, help="local steps per round")
    ap.add_argument("--mix-steps", type=int, default=1)
    ap.add_argument("--stale", action="store_true", help="mix the neighbours' previous-round models")
    ap.add_argument("--geomed", action="store_true", help="geometric median instead of the mean")
    ap.add_argument("--pipeline", action="store_true", help="the library's aggregation pipeline instead")
    ap.add_argument("--agg", action="append", default=[], metavar="KEY=VALUE", help="AggregationConfig field")
    ap.add_argument("--bucket", type=int, default=1, metavar="S", help="mix the means of random buckets of S")
    ap.add_argument("--prox", type=float, default=0.0, help="FedProx coefficient of the learner")
    ap.add_argument("--reset-velocity", action="store_true", help="zero the momentum buffer every round")
    print(json.dumps(run(ap.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
