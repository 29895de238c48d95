"""Sybils against earned influence, on the engine-level learning network of the tests (softmax regression on
IID digits, fake clock, tests/protocol/learning_net.py): honest accuracy with the attack minus the same seeded
run without it, per round, and the largest share of any honest mix the Sybils held.

    python benchmarks/bench_sybils.py            # every case
    python benchmarks/bench_sybils.py --case alie

Cases: ``permuted`` (4 honest + 20 label-permuted Sybils for 8 rounds, then 4 rounds after they leave),
``signflip`` and ``alie`` (16 honest + 16 Sybils publishing the honest mean for 5 rounds, then attacking), and
``patient`` (16 + 16 Sybils honest for 12 rounds, i.e. past establishment, then sign-flip: the documented
limit of earned influence).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.protocol.learning_net import (
    Behaviour,
    LearningNet,
    Params,
    honest_then,
    permuted,
    shares,
    sign_flip,
)

CONVERGE = 10


def _alie(net: LearningNet, z: float, until: int) -> Behaviour:
    """ "A little is enough": the honest models' mean minus ``z`` standard deviations, coordinate-wise."""

    def behave(round_: int, clean: Params) -> Params:
        if round_ <= until:
            return {k: v.copy() for k, v in clean.items()}
        publics = [e.public_params() for e in net.engines]
        return {
            k: (
                np.mean([p[k] for p in publics], axis=0) - z * np.std([p[k] for p in publics], axis=0)
            ).astype(np.float32)
            for k in publics[0]
        }

    return behave


def run(case: str) -> dict[str, float]:
    n_honest, count = (4, 20) if case == "permuted" else (16, 16)
    attack_rounds, after = (8, 4) if case == "permuted" else (10, 0)
    if case == "patient":
        attack_rounds = 20
    rounds = CONVERGE + attack_rounds + after
    clean, attacked = LearningNet(n_honest=n_honest), LearningNet(n_honest=n_honest)
    diffs, share = [], 0.0
    for r in range(rounds):
        if r == CONVERGE:
            for j in range(count):
                if case == "permuted":
                    b = permuted(0.01, seed=j)
                elif case == "signflip":
                    b = honest_then(sign_flip(4.0), until=CONVERGE + 5, seed=j)
                elif case == "alie":
                    b = _alie(attacked, 1.0, until=CONVERGE + 5)
                else:
                    b = honest_then(sign_flip(4.0), until=CONVERGE + 12, seed=j)
                attacked.add_attackers(1, b)
        if r == CONVERGE + attack_rounds:
            attacked.remove_attackers()
        clean.step()
        outs = attacked.step()
        if r >= CONVERGE:
            diffs.append(float(np.mean(attacked.accuracy()) - np.mean(clean.accuracy())))
            share = max(share, *(shares(o, attacked.attacker_ids()) for o in outs))
    return {
        "clean_final": float(np.mean(clean.accuracy())),
        "attacked_final": float(np.mean(attacked.accuracy())),
        "worst_diff_points": 100 * min(diffs),
        "max_sybil_share": share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["permuted", "signflip", "alie", "patient"], action="append")
    args = parser.parse_args()
    print("| case | clean acc | attacked acc | worst round (points) | max Sybil share |")
    print("|---|---|---|---|---|")
    for case in args.case or ["permuted", "signflip", "alie", "patient"]:
        m = run(case)
        cells = [case, f"{m['clean_final']:.3f}", f"{m['attacked_final']:.3f}"]
        cells += [f"{m['worst_diff_points']:+.1f}", f"{m['max_sybil_share']:.3f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
