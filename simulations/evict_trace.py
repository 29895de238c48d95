"""Why was an honest peer evicted? Every scored version of one matrix cell, per (observer, neighbour).

``python -m p2pfl.sim.evict_trace [bench_matrix axis options, one cell] [--set SECTION.KEY=VALUE ...]
[--seeds 1,2] [--jsonl FILE] [--show N] [--reproducible]``

Runs one :mod:`simulations.bench_matrix` cell (memory engine) per seed with
:meth:`p2pfl.scoring.ContributionScorer.evaluate` wrapped, records for every fresh score the observer, its own
round, the neighbour, whether either is an attacker, the components (``r``, cosine, loss over the reference),
the combined score, the bad-run counters and the status, and prints:

* for every falsely evicted pair (honest observer, honest neighbour): its last ``--show`` scored versions
  (which signal fell, in which rounds);
* per kind of pair (honest-honest, honest-attacker), the quantiles of each signal after the founding rounds;
* the bad scores of honest pairs by their first failing component.

A measurement harness (issue 16's false evictions): the peer code is untouched, the wrapper only reads.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from p2pfl.protocol import core
from p2pfl.scoring import scorer as scorer_mod
from p2pfl.scoring.badrun import neighbourhood_ratios

from . import bench_matrix as bm
from .plan import make_plan
from .runner import run_scenario

Row = dict[str, Any]


def install(records: list[Row]) -> None:
    """Wrap the scorer so every fresh record lands in ``records`` (idempotent per process)."""
    cls = scorer_mod.ContributionScorer
    if getattr(cls, "_traced", False):
        return
    init = core.EngineCore.__init__

    def core_init(self: Any, identity: Any, *args: Any, **kwargs: Any) -> None:
        init(self, identity, *args, **kwargs)
        if self.scorer is not None:
            self.scorer.trace_owner = identity.peer_id

    evaluate = cls.evaluate

    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = evaluate(self, *args, **kwargs)
        own = np.asarray(args[1], dtype=np.float64)
        upd = float(np.linalg.norm(own - np.asarray(args[0], dtype=np.float64)))
        ctr = np.asarray(args[3], dtype=np.float64)
        nbrs = {q: np.asarray(m, dtype=np.float64) for q, m in args[2].items() if np.all(np.isfinite(m))}
        plain = neighbourhood_ratios(own, nbrs)
        losses = args[4] if len(args) > 4 else kwargs.get("val_losses")
        own_loss = args[5] if len(args) > 5 else kwargs.get("own_val_loss")
        for p, rec in out.items():
            if rec.status == "evicted" and rec.reason == "evicted: not scored":
                continue
            st = self._peers.get(p)
            loss = None if not losses or p not in losses else float(losses[p])
            records.append(
                {
                    "obs": getattr(self, "trace_owner", "?"),
                    "round": self.rounds,
                    "peer": p,
                    "r": rec.distance,
                    "plain": plain.get(p, math.inf),
                    # the distance from the centre in own-update lengths (a round of local training)
                    "reach": float(np.linalg.norm(np.asarray(args[2][p], dtype=np.float64) - ctr)) / upd
                    if upd > 0
                    else math.inf,
                    "cos": rec.cosine,
                    "s_dist": rec.distance_score,
                    "s_cos": rec.cosine_score,
                    "s_loss": rec.loss_score,
                    "loss_ratio": None if loss is None or not own_loss else loss / max(own_loss, 0.25),
                    "tol": self.loss_tolerance,
                    "combined": rec.combined,
                    "consec": None if st is None else st.consecutive_bad,
                    "bucket": None if st is None else round(st.bad_evidence, 3),
                    "founder": None if st is None else st.founder,
                    "status": rec.status,
                    "reason": rec.reason,
                    "persist_w": self._persistence_weight(p),
                    "echo_w": self._echo_weight(p),
                    "specialist": p in kwargs.get("specialists", ()),
                }
            )
        return out

    core.EngineCore.__init__ = core_init  # type: ignore[method-assign]
    cls.evaluate = traced  # type: ignore[method-assign]
    cls._traced = True  # type: ignore[attr-defined]


def _q(values: list[float], qs: tuple[float, ...] = (0.5, 0.9, 0.99, 1.0)) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "-"
    return " / ".join(f"{np.quantile(vals, q):.2f}" for q in qs)


def _num(x: float | None) -> float:
    return math.nan if x is None else x


def first_failing(row: Row, bad_score: float) -> str:
    """Which component put a bad score below ``bad_score``: the lowest weighted one."""
    parts = {"dist": row["s_dist"], "cos": row["s_cos"], "loss": row["s_loss"]}
    low = sorted((v, k) for k, v in parts.items() if v is not None)
    return "+".join(k for v, k in low if v < 0.5) or f"mixed({low[0][1]})"


def analyse(records: list[Row], attackers: set[str], ids: dict[str, int], founding: int, show: int) -> None:
    pairs: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in records:
        pairs[(row["obs"], row["peer"])].append(row)
    false = [
        k
        for k, rows in pairs.items()
        if k[0] not in attackers and k[1] not in attackers and rows[-1]["status"] == "evicted"
    ]
    print(f"false evictions: {len(false)}")
    for obs, peer in false:
        rows = pairs[(obs, peer)]
        print(
            f"\n== observer {ids[obs]} evicted honest {ids[peer]} at its round {rows[-1]['round']}: "
            f"{rows[-1]['reason']}"
        )
        print("round     r  plain    cos  s_loss  lossq   tol  comb consec bucket pw   ew   reach")
        for row in rows[-show:]:
            print(
                f"{row['round']:5d} {row['r']:5.2f} {row['plain']:5.2f} {_num(row['cos']):6.2f} "
                f"{_num(row['s_loss']):6.2f} "
                f"{_num(row['loss_ratio']):6.1f} {row['tol']:5.1f} "
                f"{row['combined']:5.2f} {row['consec']:3d} {row['bucket']:6.2f} {row['persist_w']:.2f} "
                f"{row['echo_w']:.2f} {row['reach']:6.2f}"
            )
    for kind, test in (
        ("honest->honest", lambda o, p: o not in attackers and p not in attackers),
        ("honest->attacker", lambda o, p: o not in attackers and p in attackers),
    ):
        rows = [r for (o, p), rs in pairs.items() if test(o, p) for r in rs if r["round"] > founding]
        if not rows:
            continue
        print(f"\n{kind}: {len(rows)} scores after round {founding} (quantiles 50/90/99/100; cos 1/10/50%)")
        print(f"  r          {_q([r['r'] for r in rows])}")
        print(f"  reach      {_q([r['reach'] for r in rows], (0.01, 0.1, 0.5, 0.9, 0.99, 1.0))} (1..100%)")
        print(f"  cos        {_q([r['cos'] for r in rows], (0.01, 0.1, 0.5))}")
        print(f"  loss/ref q {_q([r['loss_ratio'] / r['tol'] for r in rows if r['loss_ratio'] is not None])}")
        print(f"  combined   {_q([r['combined'] for r in rows], (0.0, 0.01, 0.1, 0.5))} (min/1/10/50%)")
        bad = [r for r in rows if r["combined"] < 0.3]
        print(f"  bad scores: {len(bad)} ({Counter(first_failing(r, 0.3) for r in bad).most_common()})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m p2pfl.sim.evict_trace")
    for axis in bm.AXES:
        ap.add_argument(f"--{axis}", default="base")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--jsonl", default=None)
    ap.add_argument("--show", type=int, default=14)
    ap.add_argument("--reproducible", action="store_true", help="simulated clock: bit-for-bit A/B runs")
    args = ap.parse_args(argv)
    base = bm.load_scenario(bm.MATRIX_BASE).replace(run={"rounds": args.rounds})
    base = bm._overrides(base, args.set, ap)
    cell = bm.Cell(*(getattr(args, a) for a in bm.AXES))
    records: list[Row] = []
    install(records)
    work = Path(tempfile.mkdtemp(prefix="p2pfl-trace-"))
    for seed in [int(s) for s in args.seeds.split(",")]:
        records.clear()
        sc = bm.cell_scenario(base.replace(run={"seed": seed}), cell)
        plan = make_plan(sc)
        attackers = {plan.peer_ids[q.index] for q in plan.peers if not q.honest}
        ids = {plan.peer_ids[q.index]: q.index for q in plan.peers}
        r = run_scenario(sc, work / f"s{seed}", quiet=True, plots=False, reproducible=args.reproducible)
        acc, ev = r["honest_accuracy"], r["evictions"]
        print(
            f"\n##### {cell.name} seed {seed}: {100 * acc['mean']:.1f} / {100 * acc['min']:.1f}, "
            f"evictions {ev['true_positive']}/{ev['expected']}, false {ev['false_positive']}, "
            f"exposed {sorted(bm.exposed(sc))}, attackers {sorted(ids[a] for a in attackers)}"
        )
        accs = {q["index"]: q["final_accuracy"] for q in r["peers"] if q["honest"]}
        print("accuracy by peer:", {i: round(100 * a, 1) for i, a in sorted(accs.items()) if a is not None})
        analyse(records, attackers, ids, 5, args.show)
        if args.jsonl:
            with open(f"{args.jsonl}.s{seed}", "w") as fh:
                for row in records:
                    fh.write(
                        json.dumps(
                            {
                                **row,
                                "obs": ids.get(row["obs"]),
                                "peer": ids.get(row["peer"]),
                                "obs_att": row["obs"] in attackers,
                                "peer_att": row["peer"] in attackers,
                            }
                        )
                        + "\n"
                    )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
