"""Seconds per honest round with a slow, flooding or silent neighbour, on the fake-clock model of the round
loop in tests/protocol/test_pacing_neighbours.py. Run from the repository root:
``python benchmarks/bench_pacing.py``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pfl.protocol.pacing import PacingConfig
from tests.protocol.test_pacing_neighbours import simulate

OLD = {"period_factor": 1e9, "min_late_s": 10.0}  # late only after max_round_wait_s: the rule before


def main() -> None:
    for honest in (4, 2):
        for fraction in (1.0, 0.75):
            for label, extra_cfg in (("old", OLD), ("late neighbours", {})):
                cfg = PacingConfig(wait_fraction=fraction, **extra_cfg)  # type: ignore[arg-type]
                r = {
                    x: simulate(honest=honest, extra=x, cfg=cfg, seconds=120)
                    for x in (None, "slow", "flood", "silent")
                }
                cells = " | ".join(f"{r[x]:.2f}" for x in (None, "slow", "flood", "silent"))
                print(f"| {honest} | {fraction} | {label} | {cells} | {r['slow'] / r[None]:.2f} |")


if __name__ == "__main__":
    main()
