"""What gossip on bench_network's graph can reach at best: synchronous decentralised averaging, no network.

    python benchmarks/netbench/gossip_reference.py --peers 64 [--degree 8] [--rounds 5]

The workload of ``bench_network`` (``workload.py``) and the graph its p2pfl side runs on (``make_plan`` of the
same scenario: complete up to 16 peers, random-regular of degree 8 above, or ``--degree``), with p2pfl's own
learner: each round every peer trains one epoch from its own model, then takes the plain mean of its own and
every neighbour's trained model (the mean rule with ``wait_before_mix``: each mix takes all neighbours'
versions of the same round). Printed per round: the test accuracy over the peers (mean / min), and FedAvg's
(the complete graph's) for comparison. On a sparse graph the gap to FedAvg is consensus the graph has not
reached yet, whatever the network does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netbench import workload as wl


def gossip_reference(peers: int, rounds: int, degree: int | None = None) -> list[tuple[float, float]]:
    """(mean, min) test accuracy over the peers after each round of synchronous gossip (module docstring)."""
    from p2pfl.learner import NumpySoftmaxLearner
    from p2pfl.sim.plan import make_plan

    w = wl.load_workload(peers)
    sc = wl.scenario(peers, transport="memory", rounds=rounds, local_steps=w.local_steps)
    if degree is not None:
        kind = "complete" if degree >= peers - 1 else "random-regular"
        sc = sc.replace(topology={"kind": kind, "degree": min(degree, peers - 1)})
    neighbours = [p.neighbours for p in make_plan(sc).peers]
    learners = [
        NumpySoftmaxLearner(
            s, s, w.n_classes, hidden=wl.HIDDEN, lr=wl.LR, momentum=wl.MOMENTUM, batch_size=wl.BATCH, seed=i
        )
        for i, s in enumerate(w.shares)
    ]
    models = [lr_.get_params() for lr_ in learners]
    out = []
    for _ in range(rounds):
        trained = []
        for lr_, m in zip(learners, models, strict=True):
            lr_.set_params(m)
            lr_.train(w.local_steps)
            trained.append(lr_.get_params())
        models = [
            {
                k: np.mean([trained[j][k] for j in (i, *neighbours[i])], axis=0).astype(np.float32)
                for k in trained[i]
            }
            for i in range(peers)
        ]
        accs = [float(learners[0].evaluate_on(w.test, m).accuracy or 0.0) for m in models]
        out.append((float(np.mean(accs)), float(np.min(accs))))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=64)
    ap.add_argument("--degree", type=int, default=None, help="random-regular degree (peers - 1: complete)")
    ap.add_argument("--rounds", type=int, default=wl.ROUNDS)
    args = ap.parse_args(argv)
    rows = gossip_reference(args.peers, args.rounds, args.degree)
    fedavg = wl.fedavg_reference(wl.load_workload(args.peers), args.rounds, reset_momentum=False)
    print(f"| round | gossip, {args.peers} peers: mean / min | FedAvg (momentum kept) |")
    print("|---|---|---|")
    for r, ((mean, low), fa) in enumerate(zip(rows, fedavg, strict=True), 1):
        print(f"| {r} | {mean:.1%} / {low:.1%} | {fa:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
