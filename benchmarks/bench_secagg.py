"""Benchmark secure aggregation: bytes per member against the plain exchange, and CPU time per round.

Two tables, each with its reference measured in the same run.

**Peers** (the issue's target, bytes per member <= 2x the plain exchange): the 8-peer digits scenario
(``simulations/scenarios/secagg8.toml``, complete graph) runs ``--rounds`` rounds in the memory engine twice,
once as plain gossip (no ``[secagg]``) and once as one 8-member group (threshold 5). Bytes per member per
round are what each member *received* over everything (gossip announcements, payload and snapshot requests,
and the group channel), averaged over the members; in a complete graph every member receives what the
others send it, so received is what a member costs the network. The ratio is secure over plain.

**One group round** (the secure exchange alone, any model size ``d``): one group round of 8 members runs in
process over a reliable queue (tests/secagg/harness.py); with ``--drop`` two members vanish after sharing
their keys. The plain exchange there is the float32 model sent to the 7 others (``4 * d * 7`` bytes, no
envelope). CPU is the whole group's (all 8 members in this one process).

    python benchmarks/bench_secagg.py [--rounds 6] [--dims 2410,100000,1000000] [--drop] [--no-peers] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

from p2pfl.secagg import Phase
from tests.secagg.harness import Net

ROOT = Path(__file__).resolve().parents[1]


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


def _peer_run(rounds: int, secure: bool) -> dict[str, Any]:
    """Bytes each member received per round in one memory-engine run of secagg8 (``secure``) or its plain
    twin; split by what carried them."""
    from p2pfl.sim.runner import run_memory
    from p2pfl.sim.scenario import load_scenario
    from p2pfl.sim.secagg_sim import SecAggSpec

    sc = load_scenario(ROOT / "simulations" / "scenarios" / "secagg8.toml")
    sc = dataclasses.replace(sc, run=dataclasses.replace(sc.run, rounds=rounds))
    if not secure:
        sc = dataclasses.replace(sc, secagg=SecAggSpec())
    with tempfile.TemporaryDirectory() as tmp:
        out = trio.run(lambda: run_memory(sc, Path(tmp), quiet=True))
    members = [p for p in out.peers if p["honest"]]
    gossip = requests = group = 0.0
    for p in members:
        by = p["received_by"]
        gossip += by.get("gossip", 0) / max(1, p["rounds"])
        requests += sum(v for k, v in by.items() if k != "gossip") / max(1, p["rounds"])
        if out.secagg is not None:
            pid = p["id"][-8:]
            group += out.secagg["bytes_received"][pid] / max(1, out.secagg["rounds_run"][pid])
    n = len(members)
    row = {
        "run": "one 8-member group" if secure else "plain gossip",
        "gossip_B": round(gossip / n),
        "requests_B": round(requests / n),
        "group_B": round(group / n),
        "total_B": round((gossip + requests + group) / n),
        "accuracy_mean": round(sum(p["final_accuracy"] or 0 for p in members) / n, 4),
        "wall_s": round(out.wall_s, 1),
    }
    if out.secagg is not None:
        row["group_failures"] = out.secagg["failures"]
    return row


def peer_rows(rounds: int) -> list[dict[str, Any]]:
    plain = _peer_run(rounds, secure=False)
    secure = _peer_run(rounds, secure=True)
    plain["ratio"] = 1.0
    secure["ratio"] = round(secure["total_B"] / max(1, plain["total_B"]), 3)
    return [plain, secure]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6, help="rounds of the 8-peer runs")
    ap.add_argument("--dims", default="2410,100000,1000000")
    ap.add_argument("--drop", action="store_true", help="two members drop after sharing their keys")
    ap.add_argument("--no-peers", action="store_true", help="skip the 8-peer runs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    peers = [] if args.no_peers else peer_rows(args.rounds)
    rows = [measure(int(d), args.drop) for d in args.dims.split(",") if d]
    if args.json:
        print(json.dumps({"peers": peers, "group_round": rows}, indent=2))
        return 0
    if peers:
        print(f"8 peers, digits, complete graph, {args.rounds} rounds: bytes received per member per round")
        print("| run | gossip B | requests B | group channel B | total B | ratio | accuracy | wall s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in peers:
            print(
                f"| {r['run']} | {r['gossip_B']} | {r['requests_B']} | {r['group_B']} | {r['total_B']} "
                f"| {r['ratio']} | {r['accuracy_mean']} | {r['wall_s']} |"
            )
        print()
    if rows:
        print("one group round, 8 members, t = 5: the secure exchange alone")
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
