"""Privacy-utility table: honest accuracy at record-level epsilon in {1, 3, 8, inf} (delta 1e-5).

Each row is one simulation on the in-memory engine (8 peers, complete graph, no attacker): the same scenario
with ``[privacy] mode = "record"`` at the given epsilon (noise calibrated by dp-accounting for the run's
rounds), and once without DP (epsilon = inf, the reference measured in the same run). The table gives the
honest peers' test accuracy (mean and min), the points lost against the reference, the calibrated noise
multiplier and the epsilon actually spent.

    python benchmarks/bench_privacy.py --dataset digits [--rounds 40] [--eps 1,3,8,inf] [--json]
    python benchmarks/bench_privacy.py --dataset synthetic --samples 125000   # >= 10,000 records per peer
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from p2pfl.sim.runner import run_scenario
from p2pfl.sim.scenario import parse_scenario


def scenario(args: argparse.Namespace, eps: float) -> dict[str, Any]:
    data: dict[str, Any] = {
        "run": {"seed": args.seed, "rounds": args.rounds, "transport": "memory", "time_limit_s": 1800},
        "data": {"dataset": args.dataset, "partition": args.partition, "synthetic_samples": args.samples},
        "model": {
            "kind": "mlp",
            "hidden": 32,
            "lr": args.lr,
            "local_steps": args.local_steps,
            "batch_size": args.batch_size,
        },
        "topology": {"peers": 8, "kind": "complete"},
    }
    if math.isfinite(eps):
        data["privacy"] = {"mode": "record", "epsilon": eps, "delta": 1e-5, "clip_norm": args.clip}
    return data


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for eps in sorted(args.eps, key=lambda e: -e):  # inf (the reference) first
        sc = parse_scenario(scenario(args, eps), name=f"privacy-{args.dataset}-eps{eps}")
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = run_scenario(sc, Path(tmp), quiet=True, plots=False)
            wall = time.perf_counter() - t0
        priv = res.get("privacy") or {}
        acc = res["honest_accuracy"]
        rows.append(
            {
                "epsilon": eps,
                "acc_mean": acc["mean"],
                "acc_min": acc["min"],
                "epsilon_spent": priv.get("epsilon_final_max"),
                "wall_s": round(wall, 1),
            }
        )
        print(f"eps={eps}: {rows[-1]}", file=sys.stderr)
    ref = next((r for r in rows if not math.isfinite(r["epsilon"])), None)
    for r in rows:
        if ref is not None and r["acc_mean"] is not None and ref["acc_mean"] is not None:
            r["points_lost"] = round(100 * (ref["acc_mean"] - r["acc_mean"]), 1)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits", choices=["digits", "synthetic", "mnist5k"])
    ap.add_argument("--samples", type=int, default=3000, help="synthetic dataset size (all peers together)")
    ap.add_argument("--partition", default="iid")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument(
        "--eps", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 3.0, 8.0, math.inf]
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = run(args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{args.dataset} ({args.partition}), 8 peers, memory engine, {args.rounds} rounds x "
        f"{args.local_steps} steps, batch {args.batch_size}, lr {args.lr}, clip {args.clip}, delta 1e-5"
    )
    print("| epsilon | honest acc mean | min | points lost vs no DP | epsilon spent | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['epsilon']} | {100 * r['acc_mean']:.1f}% | {100 * r['acc_min']:.1f}% | "
            f"{r.get('points_lost', '-')} | {r['epsilon_spent'] or '-'} | {r['wall_s']} |"
        )


if __name__ == "__main__":
    main()
