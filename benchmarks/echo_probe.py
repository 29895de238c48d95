"""What the echo signal (p2pfl/scoring/echo.py) sees, per (honest observer, neighbour) pair, in one run.

    python benchmarks/echo_probe.py scale [--peers 300] [--rounds 10] [--seed 0] [--set KEY=VALUE ...]
    python benchmarks/echo_probe.py slice [--attack dissensus] [--fraction 0.2] [--set KEY=VALUE ...]
                                          [--trace PEER]

``scale`` is bench_scale's scenario (:func:`bench_scale.scenario`: memory1000.toml, logistic regression, IID,
10 % sign-flippers) at ``--peers``; ``slice`` is the CI slice's cell (matrix16.toml, digits, Dirichlet 0.3,
random 6-regular, 40 rounds, the default pipeline). ``--set scoring.echo_ahead=0`` (any ``SECTION.KEY``;
JSON values) changes the scenario. Printed: honest accuracy mean / min and evictions, the exposed peers
(at least half their neighbours attackers) with their accuracy, the echo quantiles of honest and attacker
pairs with the share whose weight factor fell below 1, and the neighbour's own-data loss over the
observer's own (``L / L_own``) for attacker pairs with a positive echo, at the exposed peers and elsewhere.
``--trace PEER`` prints that observer's pairs round by round (echo, weight factor, score, ``L / L_own``,
mixing weight).

It records by wrapping three methods of the scorer and the round engine (``ContributionScorer.
_observe_echo`` and ``evaluate``, ``RoundSide._mix_weights``): a measurement tool, not a library user. The
memory engine is not deterministic (docs/scoring.md, "Why the slice is not deterministic"): repeat a run.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: (scorer id, round, neighbour) -> what the wrappers saw
ECHO: dict[tuple[int, int, str], tuple[float | None, float]] = {}
SCORE: dict[tuple[int, int, str], tuple[float, float | None]] = {}
MIXW: dict[tuple[int, int, str], float] = {}


def _instrument() -> None:
    from p2pfl.protocol import rounds
    from p2pfl.scoring import scorer as sc

    observe, evaluate = sc.ContributionScorer._observe_echo, sc.ContributionScorer.evaluate
    mix = rounds.RoundSide._mix_weights

    def _observe(self: Any, peer: str, model: Any, after: Any, update: Any, **kw: Any) -> None:
        observe(self, peer, model, after, update, **kw)
        settled = self.rounds > self.config.founding_rounds
        value = sc.echo(model, after, update) if settled else None
        ECHO[id(self), self.rounds, peer] = (value, self._echo_weight(peer))

    def _evaluate(self: Any, *args: Any, **kw: Any) -> Any:
        records = evaluate(self, *args, **kw)
        losses = args[4] if len(args) > 4 else kw.get("val_losses")
        own = args[5] if len(args) > 5 else kw.get("own_val_loss")
        for p, rec in records.items():
            ratio = losses[p] / own if losses and own and p in losses else None
            SCORE[id(self), self.rounds, p] = (rec.combined, ratio)
        return records

    def _mix(self: Any, scorer: Any, reps: Any, rejected: Any) -> Any:
        w = mix(self, scorer, reps, rejected)
        for i, r in enumerate(reps):
            MIXW[id(scorer), scorer.rounds, r.peer] = float(w[i])
        return w

    sc.ContributionScorer._observe_echo = _observe  # type: ignore[method-assign]
    sc.ContributionScorer.evaluate = _evaluate  # type: ignore[method-assign]
    rounds.RoundSide._mix_weights = _mix  # type: ignore[method-assign]


def _scenario(args: argparse.Namespace) -> Any:
    if args.mode == "scale":
        import bench_scale

        sc = bench_scale.scenario(args.peers, args.rounds, 80, 10000).replace(run={"seed": args.seed})
    else:
        from p2pfl.sim import bench_matrix as bm
        from p2pfl.sim.scenario import load_scenario

        cell = bm.Cell("digits", "0.3", "rr6", args.fraction, args.attack, "default")
        sc = bm.cell_scenario(load_scenario(str(bm.MATRIX_BASE)), cell).replace(run={"rounds": args.rounds})
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        sc = sc.replace(**{section: {name: json.loads(value)}})
    return sc


def _q(values: list[float]) -> str:
    if not values:
        return "-"
    q = np.quantile(values, [0.01, 0.1, 0.5, 0.9, 0.99])
    return " / ".join(f"{v:+.2f}" for v in q)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("scale", "slice"))
    ap.add_argument("--peers", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=None, help="scale: 10, slice: 40")
    ap.add_argument("--seed", type=int, default=0, help="scale: [run] seed")
    ap.add_argument("--attack", default="dissensus", help="slice: the attack")
    ap.add_argument("--fraction", default="0.2", help="slice: attackers among the 16 peers")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--trace", type=int, default=None, metavar="PEER")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (10 if args.mode == "scale" else 40)
    _instrument()
    from p2pfl.sim.plan import make_plan
    from p2pfl.sim.runner import run_scenario

    sc = _scenario(args)
    plan = make_plan(sc)
    index = {p: i for i, p in enumerate(plan.peer_ids)}
    bad = {q.index for q in plan.peers if not q.honest}
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory(prefix="echo_probe-") as tmp:
        res = run_scenario(sc, Path(tmp), quiet=True, plots=False)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    # each scorer is one observer: the peer whose neighbours it scored
    seen: dict[int, set[int]] = defaultdict(set)
    for sid, _, p in SCORE:
        seen[sid].add(index[p])
    observer = {}
    for sid, nbrs in seen.items():
        fits = [q.index for q in plan.peers if nbrs <= set(q.neighbours)]
        if len(fits) == 1:
            observer[sid] = fits[0]
    acc = {p["index"]: p["final_accuracy"] for p in res["peers"]}
    ev = res["evictions"]
    print(f"{len(plan.peers)} peers, {args.rounds} rounds: CPU {cpu:.1f} s")
    honest = res["honest_accuracy"]
    print(
        f"honest accuracy mean / min {honest['mean']:.4f} / {honest['min']:.4f}; "
        f"evictions {ev['true_positive']}/{ev['expected']}, false {ev['false_positive']}"
    )
    exposed = [
        q.index for q in plan.peers if q.honest and 2 * len(bad & set(q.neighbours)) >= len(q.neighbours)
    ]
    print(
        "exposed (peer, attackers, accuracy):",
        [(i, len(bad & set(plan.peers[i].neighbours)), acc[i]) for i in exposed],
    )
    pairs: dict[str, list[tuple[float, float]]] = {"honest": [], "attacker": []}
    ratios: dict[str, list[float]] = {"exposed": [], "elsewhere": []}
    for (sid, rnd, p), (value, weight) in ECHO.items():
        o = observer.get(sid)
        if o is None or o in bad or value is None:
            continue
        attacker = index[p] in bad
        pairs["attacker" if attacker else "honest"].append((value, weight))
        ratio = SCORE.get((sid, rnd, p), (0.0, None))[1]
        if attacker and value > 0 and ratio is not None:
            ratios["exposed" if o in exposed else "elsewhere"].append(ratio)
    print("pairs | n | echo q01 / q10 / q50 / q90 / q99 | weight factor < 1")
    for kind, rows in pairs.items():
        cut = float(np.mean([w < 1 for _, w in rows])) if rows else 0.0
        print(f"{kind} | {len(rows)} | {_q([v for v, _ in rows])} | {cut:.1%}")
    for where, rs in ratios.items():
        if rs:
            below = float(np.mean(np.asarray(rs) < 1))
            print(
                f"attacker pairs with echo > 0, {where}: n {len(rs)}, L / L_own min {min(rs):.3g} "
                f"median {float(np.median(rs)):.3g} max {max(rs):.3g}, below 1: {below:.0%}"
            )
    if args.trace is not None:
        print(f"observer {args.trace} (accuracy {acc.get(args.trace)}):")
        for (sid, rnd, p), (value, weight) in sorted(ECHO.items(), key=lambda kv: (kv[0][1], kv[0][2])):
            if observer.get(sid) != args.trace:
                continue
            combined, ratio = SCORE.get((sid, rnd, p), (float("nan"), None))
            echo_s = "-" if value is None else f"{value:+.2f}"
            ratio_s = "-" if ratio is None else f"{ratio:.3g}"
            print(
                f"  round {rnd} neighbour {index[p]} {'attacker' if index[p] in bad else 'honest  '} "
                f"echo {echo_s} factor {weight:.2f} score {combined:.2f} L/L_own {ratio_s} "
                f"mix weight {MIXW.get((sid, rnd, p), float('nan')):.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
