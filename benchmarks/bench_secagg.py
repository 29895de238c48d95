"""Benchmark secure aggregation: bytes per member against the plain exchange, and CPU time per round.

For each model size ``d`` one group round of 8 members (threshold 5) runs in process over a reliable
queue (tests/secagg/harness.py); with ``--drop`` two members vanish after sharing their keys. The plain
exchange is what a member sends when it gossips its float32 model to the 7 others (``4 * d * 7`` bytes,
without any envelope); the ratio is secure-aggregation bytes over that, measured in the same run. CPU is
the whole group's (all 8 members in this one process), so one member's share is about an eighth.

    python benchmarks/bench_secagg.py [--dims 2410,100000,1000000] [--drop] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pfl.secagg import Phase
from tests.secagg.harness import Net


def measure(dim: int, drop: bool) -> dict[str, float]:
    crash = dict.fromkeys([2, 5], Phase.MASKED_INPUT) if drop else {}
    t0 = time.process_time()
    net = Net(dim=dim, crash=crash).run()
    cpu = time.process_time() - t0
    alive = net.alive()
    assert all(net.rounds[k].phase == Phase.DONE for k in alive)
    plain = 4 * dim * 7
    sent = max(net.rounds[k].bytes_sent for k in alive)
    return {
        "dim": dim,
        "members": len(alive),
        "plain_bytes": plain,
        "secagg_bytes": sent,
        "ratio": round(sent / plain, 3),
        "group_cpu_s": round(cpu, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="2410,100000,1000000")
    ap.add_argument("--drop", action="store_true", help="two members drop after sharing their keys")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [measure(int(d), args.drop) for d in args.dims.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| d | members left | plain B/member | secagg B/member | ratio | group CPU s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dim']} | {r['members']} | {r['plain_bytes']} | {r['secagg_bytes']} | {r['ratio']} "
            f"| {r['group_cpu_s']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
