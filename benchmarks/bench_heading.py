"""CPU cost of the scorer's heading signal per evaluation: off, shift test only, shift and lag tests.

One :class:`p2pfl.scoring.ContributionScorer` per configuration is fed the same synthetic rounds (a centre
drifting by noise, the own model and ``--neighbours`` neighbours around it, a loss each) and the thread CPU
time of ``evaluate`` + ``weights_for`` is summed. Thread CPU time, not wall clock, because the development
machine is shared: other processes move wall-clock figures much more. The configurations are alternated
``--repeat`` times and the least per configuration is printed, with the increments over the first row (the
reference, measured in the same run).

    python benchmarks/bench_heading.py [--evaluations 400] [--dim 490] [--neighbours 6] [--repeat 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from p2pfl.scoring import ContributionScorer, ScoringConfig

CONFIGS: dict[str, ScoringConfig] = {
    "heading off": ScoringConfig(heading=False),
    "shift only": ScoringConfig(heading_lag=False),
    "shift + lag (default)": ScoringConfig(),
}


def cpu_ms_per_evaluation(cfg: ScoringConfig, evaluations: int, dim: int, neighbours: int) -> float:
    rng = np.random.default_rng(0)
    scorer = ContributionScorer(cfg)
    centre = rng.normal(size=dim)
    ids = [f"p{i}" for i in range(neighbours)]
    spent = 0.0
    for _ in range(evaluations):
        scorer.begin_round()
        centre = centre + 0.01 * rng.normal(size=dim)
        after = centre + 0.05 * rng.normal(size=dim)
        models = {p: centre + 0.05 * rng.normal(size=dim) for p in ids}
        losses = dict.fromkeys(ids, 0.3)
        t0 = time.thread_time()
        scorer.evaluate(centre, after, models, after, losses, 0.3)
        scorer.weights_for(ids)
        spent += time.thread_time() - t0
    return spent / evaluations * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(prog="python benchmarks/bench_heading.py")
    ap.add_argument("--evaluations", type=int, default=400)
    ap.add_argument("--dim", type=int, default=490)
    ap.add_argument("--neighbours", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, cfg in CONFIGS.items():
            ms = cpu_ms_per_evaluation(cfg, args.evaluations, args.dim, args.neighbours)
            best[name] = min(best.get(name, ms), ms)
    ref = next(iter(best.values()))
    print(f"| configuration | CPU ms per evaluate | vs {next(iter(best))} |")
    print("|---|---|---|")
    for name, ms in best.items():
        print(f"| {name} | {ms:.3f} | +{ms - ref:.3f} ms ({ms / ref:.2f}x) |")


if __name__ == "__main__":
    main()
