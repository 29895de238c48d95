"""Issue 17's scale target for the memory engine: 10,000 peers complete 10 rounds in under 10 minutes.

    python benchmarks/bench_scale.py [--peers 1000,10000] [--rounds 10] [--per-peer 80] [--test 10000]
                                     [--target-s 600] [--wait-before-mix on|off] [--json] [--profile N]

The workload is ``simulations/scenarios/memory1000.toml`` (logistic regression on the synthetic dataset,
random 6-regular graph, 10 % sign-flip attackers, the own-data guard, scoring and the robust defaults) at
each size, with the same data per peer at every size: ``--per-peer`` samples (~85 % training, 15 %
validation; memory1000 has 80) plus one global test set of ``--test`` samples that every peer evaluates on
each round (memory1000's 20 % holdout would be 200,000 samples at 10,000 peers). Each size runs
``p2pfl.sim.runner.run_scenario`` (engine, results, report; no plots) in its own child process whose tree is
sampled for CPU seconds and peak RSS. The first size is the reference: the table gives each size's CPU cost
per peer-round against it (1.00x: the engine scales linearly; CPU, because on a shared machine the wall
measures the other jobs as much as this one).

Columns: ``set-up`` is the child's start until the engine runs (imports); ``round 1`` the engine's start
until the honest peers' first round is done (mean; data, plan, peers created, topology wired, one round);
``engine`` the engine's wall (``run_memory``, everything but the report); ``report`` the results' summary
and report; ``wall`` the child process end to end, which the target is about; ``short``: honest peers that
did not complete every round. ``--profile N`` runs N peers once under cProfile and prints the top
functions instead.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from netbench.child import run_child  # noqa: E402

SCENARIO = "memory1000.toml"
MB = 1e6


def scenario(peers: int, rounds: int, per_peer: int, test: int, wait_before_mix: bool = True) -> Any:
    """memory1000.toml at ``peers`` peers: ``per_peer`` samples each, one ``test``-sample test set;
    ``wait_before_mix``: the same-round order (the peer's default), else the old order (p2pfl.protocol.pacing,
    "Where the wait sits")."""
    from p2pfl.sim import runner
    from p2pfl.sim.scenario import load_scenario

    sc = load_scenario(str(Path(runner.__file__).resolve().parent / "scenarios" / SCENARIO))
    samples = peers * per_peer + test
    run: dict[str, Any] = {"rounds": rounds, "time_limit_s": 3600, "wait_before_mix": wait_before_mix}
    return sc.replace(
        run=run,
        topology={"peers": peers},
        data={"synthetic_samples": samples, "test_fraction": test / samples},
    )


def _child(args: argparse.Namespace) -> int:
    """One size in this (child) process: write its figures to ``--_result``."""
    started = time.time()
    from p2pfl.sim.runner import run_scenario

    sc = scenario(args.child_peers, args.rounds, args.per_peer, args.test, args.wait_before_mix == "on")
    out = Path(args.out)
    ready = time.time()
    res = run_scenario(sc, out, quiet=True, plots=False)
    done = time.time()
    t = res["series"]["t"]
    figures = {
        "peers": args.child_peers,
        "rounds": args.rounds,
        "setup_s": ready - started,
        "engine_s": res["wall_s"],
        "round1_s": t[0] if t else None,
        "report_s": (done - ready) - res["wall_s"],
        "timed_out": res["timed_out"],
        "acc_mean": res["honest_accuracy"]["mean"],
        "acc_min": res["honest_accuracy"]["min"],
        "evictions": res["evictions"],
        "short": sum(1 for p in res["peers"] if p["honest"] and p["rounds"] < args.rounds),
    }
    Path(args.result).write_text(json.dumps(figures))
    return 0


def measure(peers: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    child_args = ["--_child", str(peers), "--_out", str(work / f"run-{peers}"), "--rounds", str(args.rounds)]
    child_args += ["--per-peer", str(args.per_peer), "--test", str(args.test)]
    child_args += ["--wait-before-mix", args.wait_before_mix]
    figures, usage = run_child(__file__, child_args, work / f"scale-{peers}.json", timeout=4 * 3600)
    figures = figures or {"peers": peers}
    figures.update(wall_s=usage.wall_s, cpu_s=usage.cpu_s, peak_rss_mb=usage.peak_rss_bytes / MB)
    figures["ms_per_peer_round"] = 1000 * usage.wall_s / (peers * args.rounds)
    figures["cpu_ms_per_peer_round"] = 1000 * usage.cpu_s / (peers * args.rounds)
    return figures


def table(rows: list[dict[str, Any]], target_s: float) -> str:
    ref = rows[0]
    head = (
        "| peers | rounds | wall (s) | set-up (s) | engine (s) | report (s) | CPU (s) | peak RSS (MB) "
        "| round 1 (s) | ms per peer-round | CPU ms per peer-round | vs reference | accuracy mean / min "
        "| evictions (false) | short "
        "| target |"
    )
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        ev = r.get("evictions") or {}
        ratio = r["cpu_ms_per_peer_round"] / ref["cpu_ms_per_peer_round"]
        acc = (
            f"{r['acc_mean']:.2%} / {r['acc_min']:.2%}"
            if isinstance(r.get("acc_mean"), float) and isinstance(r.get("acc_min"), float)
            else "-"
        )
        met = "timed out" if r.get("timed_out") else ("met" if r["wall_s"] < target_s else "missed")
        lines.append(
            f"| {r['peers']:,} | {r.get('rounds', '-')} | {r['wall_s']:.1f} | {_f(r.get('setup_s'))} "
            f"| {_f(r.get('engine_s'))} | {_f(r.get('report_s'))} | {r['cpu_s']:.1f} "
            f"| {r['peak_rss_mb']:.0f} "
            f"| {_f(r.get('round1_s'))} | {r['ms_per_peer_round']:.2f} | {r['cpu_ms_per_peer_round']:.2f} "
            f"| {ratio:.2f}x | {acc} "
            f"| {ev.get('true_positive', '-')}/{ev.get('expected', '-')} ({ev.get('false_positive', '-')}) "
            f"| {r.get('short', '-')} "
            f"| {met} (< {target_s:.0f} s) |"
        )
    return "\n".join(lines)


def _f(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, int | float) and math.isfinite(v) else "-"


def profile(peers: int, args: argparse.Namespace) -> int:
    import cProfile
    import pstats

    import trio

    from p2pfl.sim.runner import run_memory

    sc = scenario(peers, args.rounds, args.per_peer, args.test, args.wait_before_mix == "on")
    with tempfile.TemporaryDirectory(prefix="bench_scale-") as tmp:
        prof = cProfile.Profile()
        prof.enable()
        out = trio.run(lambda: run_memory(sc, Path(tmp), quiet=True))
        prof.disable()
    print(f"{peers} peers, {args.rounds} rounds: engine {out.wall_s:.1f} s (under cProfile)")
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumtime").print_stats(50)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", default="1000,10000", help="comma-separated sizes; the first is the reference")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-peer", type=int, default=80, help="samples per peer (training + validation)")
    ap.add_argument("--test", type=int, default=10000, help="samples in the global test set")
    ap.add_argument("--target-s", type=float, default=600.0, help="the wall-clock target (issue 17: 10 min)")
    ap.add_argument(
        "--wait-before-mix",
        choices=("on", "off"),
        default="on",
        help="the round order: train, publish, wait, mix (on, the default) or wait, train, publish, mix",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", metavar="DIR", help="keep each size's run directory under DIR")
    ap.add_argument("--profile", type=int, metavar="N", help="profile N peers under cProfile instead")
    ap.add_argument("--_child", dest="child_peers", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_result", dest="result", help=argparse.SUPPRESS)
    ap.add_argument("--_out", dest="out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_peers:
        return _child(args)
    if args.profile:
        return profile(args.profile, args)
    sizes = [int(s) for s in args.peers.split(",") if s.strip()]
    if not sizes or min(sizes) < 8:
        ap.error("--peers needs sizes of at least 8 peers")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_scale-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            rows.append(measure(n, args, work))
            print(f"{n} peers: {rows[-1]['wall_s']:.1f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(table(rows, args.target_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
