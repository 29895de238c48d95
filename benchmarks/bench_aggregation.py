"""Benchmark the aggregators, and the attack simulation that picks the pipeline defaults.

Speed (default mode): for k in {8, 16, 32} and d in {1e5, 1e6, 1e7} time every rule and print its ratio
to numpy.mean and numpy.median measured in the same run (best of ``--reps``; 1e7 sizes use at most 2
repetitions and skip the O(k^2 d) / iterative rules unless ``--all-rules``). Exactness of median and
trimmed mean against numpy is checked on every shape.

    python benchmarks/bench_aggregation.py [--quick] [--json] [--reps N]
    python benchmarks/bench_aggregation.py --attack-sim [--rounds 20] [--json]

``--attack-sim`` runs a numpy-only decentralised simulation: 16 peers on a complete graph, 4 of them
Byzantine; honest peers have non-IID quadratic objectives in 4 clusters, take one noisy local step,
then aggregate their own model with the 15 others through a candidate pipeline. Attacks: none,
sign-flip, scaled, Gaussian, "a little is enough" (ALIE) and inner-product manipulation (IPM). The score
is the honest peers' mean distance to the honest optimum after the last round (relative to its norm).
A second table runs the default pipeline with the contribution scorer in the loop and reports how many
attackers were evicted and how many honest neighbours were wrongly evicted or excluded.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pfl import aggregation as agg
from p2pfl.scoring import ContributionScorer, ScoringConfig

# --------------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------------


def _best_of(fn: Callable[[], object], reps: int) -> float:
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def speed(quick: bool, reps: int, all_rules: bool) -> list[dict[str, Any]]:
    ks = (16,) if quick else (8, 16, 32)
    ds = (100_000, 1_000_000) if quick else (100_000, 1_000_000, 10_000_000)
    rows: list[dict[str, Any]] = []
    for d in ds:
        for k in ks:
            x = np.random.default_rng(k * 1000 + d % 997).standard_normal((k, d), dtype=np.float32)
            r = reps if d < 10_000_000 else min(reps, 2)
            heavy_ok = all_rules or d < 10_000_000
            own = x[0].copy()
            rules: dict[str, Callable[[], object]] = {
                "numpy.mean": lambda x=x: np.mean(x, axis=0),
                "numpy.median": lambda x=x: np.median(x, axis=0),
                "mean": lambda x=x: agg.mean(x),
                "median": lambda x=x: agg.median(x),
                "trimmed_mean(0.2)": lambda x=x: agg.trimmed_mean(x, 0.2),
            }
            if heavy_ok:
                f = max(agg.max_krum_f(k) // 2, 1)
                rules.update(
                    {
                        "krum": lambda x=x, f=f: agg.krum(x, f),
                        "multi_krum": lambda x=x, f=f: agg.multi_krum(x, f),
                        "geometric_median": lambda x=x: agg.geometric_median(x, max_iter=20),
                        "centered_clip(3 it)": lambda x=x, own=own: agg.centered_clip(x, own, 1.0, 3),
                        "nnm": lambda x=x, f=f: agg.nearest_neighbour_mixing(x, f),
                        "self_centred_clip": lambda x=x, own=own: agg.self_centred_clip(own, x, 1.0),
                        "aggregate(default)": lambda x=x, own=own: agg.aggregate(
                            agg.AggregationConfig(), own, x[1:]
                        ),
                    }
                )
            exact_median = bool(np.array_equal(agg.median(x), np.median(x, axis=0)))
            t = math.floor(0.2 * k)
            ref_tm = np.sort(x, axis=0)[t : k - t].mean(axis=0) if d <= 1_000_000 else None
            exact_tm = None if ref_tm is None else bool(np.array_equal(agg.trimmed_mean(x, 0.2), ref_tm))
            times = {
                name: _best_of(fn, 1 if name == "numpy.median" and d >= 10_000_000 else r)
                for name, fn in rules.items()
            }
            for name, sec in times.items():
                rows.append(
                    {
                        "k": k,
                        "d": d,
                        "rule": name,
                        "seconds": sec,
                        "vs_numpy_mean": sec / times["numpy.mean"],
                        "vs_numpy_median": sec / times["numpy.median"],
                        "median_exact": exact_median,
                        "trimmed_mean_exact": exact_tm,
                    }
                )
            del x
    return rows


def print_speed(rows: list[dict[str, Any]]) -> None:
    print(f"{'k':>3} {'d':>9} {'rule':<20} {'seconds':>9} {'/np.mean':>9} {'np.median/':>10}")
    for row in rows:
        print(
            f"{row['k']:>3} {row['d']:>9.0e} {row['rule']:<20} {row['seconds']:>9.4f} "
            f"{row['vs_numpy_mean']:>9.2f} {1 / row['vs_numpy_median']:>10.1f}x"
        )
    exact = {(r["k"], r["d"]): (r["median_exact"], r["trimmed_mean_exact"]) for r in rows}
    print("exact (median, trimmed mean) vs numpy:", exact)


# --------------------------------------------------------------------------------------------------
# Attack simulation
# --------------------------------------------------------------------------------------------------

N_PEERS, N_BAD, DIM, CLUSTERS = 16, 4, 200, 4
LR, GRAD_NOISE, VAL_FLOOR = 0.3, 0.05, 1.0
ATTACKS = ("none", "signflip", "scaled", "gaussian", "alie", "ipm")


def _alie_z(n: int, b: int) -> float:
    """z of "a little is enough" (Baruch et al. 2019): Phi^-1((n - s) / n), s = floor(n/2 + 1) - b."""
    s = math.floor(n / 2 + 1) - b
    return statistics.NormalDist().inv_cdf((n - s) / n)


def _craft(
    attack: str, honest: np.ndarray, prev_mean: np.ndarray, target: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    mu = honest.mean(axis=0)
    update = mu - prev_mean
    if attack == "signflip":
        bad = prev_mean - 4.0 * update
    elif attack == "scaled":
        bad = mu + 10.0 * (target - mu)
    elif attack == "gaussian":
        bad = mu + rng.normal(0.0, 3.0, size=mu.shape)
    elif attack == "alie":
        bad = mu - _alie_z(N_PEERS, N_BAD) * honest.std(axis=0)
    elif attack == "ipm":
        bad = prev_mean - 0.5 * update
    else:
        raise ValueError(attack)
    return np.broadcast_to(bad.astype(np.float32), (N_BAD, mu.shape[0]))


def simulate(
    config: agg.AggregationConfig,
    attack: str,
    rounds: int,
    seed: int = 0,
    scoring: ScoringConfig | None = None,
) -> dict[str, float]:
    """Run one simulation; return the final relative error and, with scoring, eviction counts."""
    rng = np.random.default_rng(seed)
    n_honest = N_PEERS - N_BAD
    centres = rng.normal(0.0, 1.0, size=(CLUSTERS, DIM))
    optima = centres[np.arange(n_honest) % CLUSTERS] + rng.normal(0.0, 0.1, size=(n_honest, DIM))
    val_optima = optima + rng.normal(0.0, 0.05, size=optima.shape)
    target = rng.normal(0.0, 3.0, size=DIM)
    optimum = optima.mean(axis=0)
    x = np.zeros((n_honest, DIM), dtype=np.float32)
    scorers = [ContributionScorer(scoring) for _ in range(n_honest)] if scoring is not None else []
    names = [f"p{j:02d}" for j in range(N_PEERS)]
    for _ in range(rounds):
        before = x.copy()
        start_mean = x.mean(axis=0)
        grad = (x - optima) + rng.normal(0.0, GRAD_NOISE, size=x.shape)
        x = (x - LR * grad).astype(np.float32)
        published = x
        if attack != "none":
            published = np.concatenate([x, _craft(attack, x, start_mean, target, rng)])
        new = np.empty_like(x)
        for i in range(n_honest):
            idx = [j for j in range(published.shape[0]) if j != i]
            nb = published[idx]
            if scorers:
                peers = [names[j] for j in idx]
                w = scorers[i].weights_for(peers)
                new[i] = agg.aggregate(config, x[i], nb, w)
                vl = {
                    p: VAL_FLOOR + float(np.mean((nb[n] - val_optima[i]) ** 2)) for n, p in enumerate(peers)
                }
                own_vl = VAL_FLOOR + float(np.mean((x[i] - val_optima[i]) ** 2))
                scorers[i].evaluate(before[i], x[i], dict(zip(peers, nb, strict=True)), new[i], vl, own_vl)
            else:
                new[i] = agg.aggregate(config, x[i], nb)
        x = new
    err = float(np.mean(np.linalg.norm(x - optimum, axis=1)) / np.linalg.norm(optimum))
    out = {"error": err}
    if scorers:
        bad_names = set(names[n_honest:])
        out["attackers_evicted"] = float(np.mean([len(s.evicted() & bad_names) for s in scorers]))
        out["honest_evicted"] = float(np.mean([len(s.evicted() - bad_names) for s in scorers]))
        out["honest_excluded"] = float(
            np.mean(
                [
                    sum(not s.is_admitted(p) for p in names[:n_honest] if p != names[i])
                    for i, s in enumerate(scorers)
                ]
            )
        )
    return out


def candidate_pipelines() -> dict[str, agg.AggregationConfig]:
    base = agg.AggregationConfig(rule="mean", nnm=False, self_clip_scale=None, f=N_BAD)
    cands: dict[str, agg.AggregationConfig] = {}
    for rule, extra in (
        ("mean", {}),
        ("median", {}),
        ("trimmed-mean", {"beta": 0.2}),
        ("trimmed-mean", {"beta": 0.3}),
        ("krum", {}),
        ("multi-krum", {}),
        ("geomed", {}),
        ("cclip", {"tau": 1.0}),
    ):
        for nnm in (False, True):
            for clip in (None, 1.0, 2.0):
                label = rule + (f"({extra['beta']})" if "beta" in extra else "")
                label += " +nnm" if nnm else ""
                label += f" +selfclip{clip:g}" if clip else ""
                cands[label] = replace(base, rule=rule, nnm=nnm, self_clip_scale=clip, **extra)
    return cands


def focused_pipelines() -> dict[str, agg.AggregationConfig]:
    """The short list from the full sweep, with the self-clip radius varied."""
    base = agg.AggregationConfig(f=N_BAD)
    cands: dict[str, agg.AggregationConfig] = {}
    for rule, extra in (
        ("median", {}),
        ("trimmed-mean", {"beta": 0.2}),
        ("trimmed-mean", {"beta": 0.3}),
        ("geomed", {}),
        ("multi-krum", {}),
    ):
        for clip in (0.5, 1.0, 1.5):
            label = rule + (f"({extra['beta']})" if "beta" in extra else "") + f" +nnm +selfclip{clip:g}"
            cands[label] = replace(base, rule=rule, nnm=True, self_clip_scale=clip, **extra)
    return cands


SCORER_VARIANTS: dict[str, ScoringConfig] = {
    "default": ScoringConfig(),
    "no-cosine": ScoringConfig(w_cosine=0.0),
    "cos_bad=-0.5": ScoringConfig(cos_bad=-0.5),
    "no-loss": ScoringConfig(use_val_loss=False),
    "ema=0.5": ScoringConfig(ema=0.5),
}


def attack_sim(rounds: int, seeds: int, focused: bool = False) -> dict[str, Any]:
    results: dict[str, dict[str, float]] = {}
    pipelines = focused_pipelines() if focused else candidate_pipelines()
    for label, cfg in pipelines.items():
        results[label] = {
            a: float(np.mean([simulate(cfg, a, rounds, seed)["error"] for seed in range(seeds)]))
            for a in ATTACKS
        }
        results[label]["worst"] = max(results[label][a] for a in ATTACKS)
    scoring: dict[str, dict[str, float]] = {}
    for name, scfg in SCORER_VARIANTS.items() if focused else [("default", ScoringConfig())]:
        for a in ATTACKS:
            runs = [simulate(agg.AggregationConfig(), a, rounds, seed, scfg) for seed in range(seeds)]
            scoring[f"{name} / {a}"] = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
    return {"pipelines": results, "scoring_with_default": scoring}


def print_attack(res: dict[str, Any]) -> None:
    head = "".join(f"{a:>9}" for a in (*ATTACKS, "worst"))
    print(f"{'pipeline':<38}{head}")
    for label, row in sorted(res["pipelines"].items(), key=lambda kv: kv[1]["worst"]):
        print(f"{label:<38}" + "".join(f"{row[a]:>9.3f}" for a in (*ATTACKS, "worst")))
    print("\ndefault pipeline + default scorer (per honest peer, averaged):")
    for a, row in res["scoring_with_default"].items():
        print(f"  {a:<24} " + "  ".join(f"{k}={v:.3f}" for k, v in row.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="k=16 and d in {1e5, 1e6} only")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per timing (best is kept)")
    ap.add_argument("--all-rules", action="store_true", help="also time the O(k^2 d) rules at d=1e7")
    ap.add_argument("--attack-sim", action="store_true", help="run the defaults-selection simulation")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--focused", action="store_true", help="short list + self-clip radii + scorer variants")
    args = ap.parse_args(argv)
    if args.attack_sim:
        res = attack_sim(max(1, min(args.rounds, 200)), max(1, min(args.seeds, 10)), args.focused)
        print(json.dumps(res, indent=1) if args.json else "", end="")
        if not args.json:
            print_attack(res)
        return 0
    rows = speed(args.quick, max(1, min(args.reps, 20)), args.all_rules)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print_speed(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
