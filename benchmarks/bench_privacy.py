"""Privacy-utility table: honest accuracy at record-level epsilon in {1, 3, 8, inf} (delta 1e-5).

Each row is one simulation on the in-memory engine (8 peers, complete graph, IID, no attacker), all rows in
one invocation: the scenario with ``[privacy] mode = "record"`` at the given epsilon (noise calibrated by
dp-accounting for the run's rounds), and once without DP (epsilon = inf, the reference). The table gives
the honest peers' test accuracy (mean and min), the points lost against the reference, each row's training
hyper-parameters, the calibrated noise multiplier and the epsilon actually spent.

The no-DP row trains with ``--batch-size/--lr/--local-steps``; the DP rows with ``--dp-batch-size/--dp-lr/
--dp-local-steps`` when given (DP-SGD wants larger expected batches than plain SGD: the noise on a step's
mean gradient is ``sigma * clip / batch``), else with the same values; ``--dp-at EPS=BATCH/LR/CLIP/STEPS``
gives one epsilon's row a setting of its own (a larger budget affords more steps).

    python benchmarks/bench_privacy.py --dataset digits [--rounds 40] [--eps 1,3,8,inf] [--json]
    python benchmarks/bench_privacy.py --dataset synthetic_hard --samples 125000 --batch-size 1024 --lr 0.5 \\
        --local-steps 40 --dp-batch-size 1024 --dp-lr 1.0 --clip 0.5   # >= 10,000 records per peer

On a loaded machine run with ``OPENBLAS_NUM_THREADS=1``: numpy's threaded BLAS is far slower on these small
matrices when the cores are busy (the accuracies do not depend on it).
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

from p2pfl.privacy.accountant import Mechanism
from p2pfl.privacy.runtime import calibrated
from p2pfl.sim.data import DATASETS
from p2pfl.sim.plan import load_splits
from p2pfl.sim.runner import run_scenario
from p2pfl.sim.scenario import parse_scenario

DELTA = 1e-5


def hyper(args: argparse.Namespace, eps: float) -> dict[str, Any]:
    """The training hyper-parameters of one row: the DP ones for a finite epsilon."""
    dp = math.isfinite(eps)

    def pick(name: str) -> Any:
        value = getattr(args, f"dp_{name}") if dp else None
        return getattr(args, name) if value is None else value

    out = {
        "batch_size": pick("batch_size"),
        "lr": pick("lr"),
        "local_steps": pick("local_steps"),
        "lr_decay": pick("lr_decay"),
        "clip": args.clip if dp else None,
    }
    return out | (getattr(args, "dp_at", None) or {}).get(eps, {})


def dp_at(text: str) -> tuple[float, dict[str, Any]]:
    """``EPS=BATCH/LR/CLIP/STEPS``: one DP row's own setting (the best setting depends on the budget)."""
    try:
        eps, rest = text.split("=")
        batch, lr, clip, steps = rest.split("/")
        return float(eps), {
            "batch_size": int(batch),
            "lr": float(lr),
            "clip": float(clip),
            "local_steps": int(steps),
        }
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected EPS=BATCH/LR/CLIP/STEPS, got {text!r}") from exc


def scenario(args: argparse.Namespace, eps: float) -> dict[str, Any]:
    h = hyper(args, eps)
    data: dict[str, Any] = {
        "run": {"seed": args.seed, "rounds": args.rounds, "transport": "memory", "time_limit_s": 3600},
        "data": {"dataset": args.dataset, "partition": args.partition, "synthetic_samples": args.samples},
        "model": {
            "kind": "mlp",
            "hidden": args.hidden,
            "lr": h["lr"],
            "lr_decay": h["lr_decay"],
            "momentum": args.momentum,
            "local_steps": h["local_steps"],
            "batch_size": h["batch_size"],
        },
        "topology": {"peers": 8, "kind": "complete"},
    }
    if math.isfinite(eps):
        data["privacy"] = {
            "mode": "record",
            "epsilon": eps,
            "delta": DELTA,
            "clip_norm": h["clip"],
            "accountant": args.accountant,
        }
    return data


def noise_multiplier(args: argparse.Namespace, eps: float, records: int) -> float | None:
    """The sigma a peer with ``records`` training records calibrates for this row (None without DP)."""
    if not math.isfinite(eps):
        return None
    h = hyper(args, eps)
    q = min(1.0, h["batch_size"] / records)
    return calibrated(Mechanism("record", 1.0, q, h["local_steps"]), eps, DELTA, args.rounds, args.accountant)


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    rows = []
    records = 0
    for eps in sorted(args.eps, key=lambda e: -e):  # inf (the reference) first
        sc = parse_scenario(scenario(args, eps), name=f"privacy-{args.dataset}-eps{eps}")
        records = min(len(s.train) for s in load_splits(sc))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = run_scenario(sc, Path(tmp), quiet=True, plots=False)
            wall = time.perf_counter() - t0
        priv = res.get("privacy") or {}
        acc = res["honest_accuracy"]
        sigma = noise_multiplier(args, eps, records)
        rows.append(
            {
                "epsilon": eps,
                "acc_mean": acc["mean"],
                "acc_min": acc["min"],
                **hyper(args, eps),
                "noise_multiplier": None if sigma is None else round(sigma, 3),
                "epsilon_spent": priv.get("epsilon_final_max"),
                "wall_s": round(wall, 1),
            }
        )
        print(f"eps={eps}: {rows[-1]}", file=sys.stderr, flush=True)
    ref = next((r for r in rows if not math.isfinite(r["epsilon"])), None)
    for r in rows:
        if ref is not None and r["acc_mean"] is not None and ref["acc_mean"] is not None:
            r["points_lost"] = round(100 * (ref["acc_mean"] - r["acc_mean"]), 1)
    return rows, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits", choices=DATASETS)
    ap.add_argument("--samples", type=int, default=3000, help="generated dataset size (all peers together)")
    ap.add_argument("--partition", default="iid")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument(
        "--accountant", choices=("rdp", "pld"), default="rdp", help="dp-accounting accountant the peers use"
    )
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--lr-decay", type=float, default=1.0, help="learning rate x this after each round")
    ap.add_argument("--dp-lr-decay", type=float, default=None, help="DP rows (default: --lr-decay)")
    ap.add_argument("--dp-local-steps", type=int, default=None, help="DP rows (default: --local-steps)")
    ap.add_argument("--dp-batch-size", type=int, default=None, help="DP rows' expected Poisson batch")
    ap.add_argument("--dp-lr", type=float, default=None, help="DP rows (default: --lr)")
    ap.add_argument("--clip", type=float, default=1.0, help="DP rows' per-example clipping norm")
    ap.add_argument(
        "--dp-at",
        type=dp_at,
        action="append",
        default=[],
        metavar="EPS=BATCH/LR/CLIP/STEPS",
        help="one DP row's own setting, overriding the --dp-* values (repeatable)",
    )
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument(
        "--eps", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 3.0, 8.0, math.inf]
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.dp_at = dict(args.dp_at)
    rows, records = run(args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{args.dataset} ({args.partition}, {records}+ training records per peer), 8 peers, memory engine, "
        f"{args.rounds} rounds, MLP {args.hidden} hidden, momentum {args.momentum}, delta {DELTA}, "
        f"seed {args.seed}"
    )
    print(
        "| epsilon | honest acc mean | min | points lost vs no DP | batch | lr (decay/round) | steps/round "
        "| clip | sigma | epsilon spent | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['epsilon']} | {100 * r['acc_mean']:.1f}% | {100 * r['acc_min']:.1f}% | "
            f"{r.get('points_lost', '-')} | {r['batch_size']} | {r['lr']} ({r['lr_decay']}) | "
            f"{r['local_steps']} | "
            f"{r['clip'] or '-'} | {r['noise_multiplier'] or '-'} | {r['epsilon_spent'] or '-'} | "
            f"{r['wall_s']} |"
        )


if __name__ == "__main__":
    main()
