"""Cost of the per-round quality evaluation and rollout step (p2pfl.rollout.Rollout.after_round).

``python benchmarks/bench_rollout.py``: a NumpySoftmaxLearner MLP (64 features, 32 hidden, 10 classes) with a
validation split of N samples; prints the median of 50 calls with the rollout off and on (shadow/canary
evaluations of candidate and serving versions), with and without 1000 feedback samples, and with 100 new
feedback samples before each round (then candidate and serving are evaluated again).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from p2pfl.learner import Dataset, NumpySoftmaxLearner
from p2pfl.rollout import Rollout, RolloutConfig


def learner(n_val: int) -> NumpySoftmaxLearner:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_val, 64)).astype(np.float32)
    y = rng.integers(0, 10, n_val).astype(np.int64)
    return NumpySoftmaxLearner(Dataset(x, y), Dataset(x, y), 10, hidden=32)


def measure(n_val: int, enabled: bool, feedback: int, per_round: int = 0) -> float:
    lr = learner(n_val)
    r = Rollout(RolloutConfig(enabled=enabled, shadow_rounds=1000), lr, None, "peer", "net")
    rng = np.random.default_rng(1)
    if feedback:
        r.submit_feedback(rng.normal(size=(feedback, 64)), rng.integers(0, 10, feedback))
    times = []
    for seq in range(1, 51):
        lr.train(1)
        params = lr.get_params()
        if per_round:  # new feedback since the last round: candidate and serving are evaluated again
            r.submit_feedback(rng.normal(size=(per_round, 64)), rng.integers(0, 10, per_round))
        t = time.perf_counter()
        r.after_round(seq, seq, bytes(32), params)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


if __name__ == "__main__":
    print("| validation samples | rollout | feedback kept (new per round) | after_round median (ms) |")
    print("|---|---|---|---|")
    for n_val in (200, 2000):
        for enabled, feedback, per_round in ((False, 0, 0), (True, 0, 0), (True, 1000, 0), (True, 1000, 100)):
            ms = measure(n_val, enabled, feedback, per_round)
            state = "on" if enabled else "off"
            print(f"| {n_val} | {state} | {feedback} ({per_round}) | {ms:.2f} |")
