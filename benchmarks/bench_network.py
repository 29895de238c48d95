"""Issue 17's side-by-side benchmark: p2pfl peers against Flower's simulation engine on the same workload.

    python benchmarks/bench_network.py --peers N [--engine libp2p|memory] [--rounds 5] [--compare flower]
                                       [--codec int8] [--degree D] [--wait-before-mix on|off]
                                       [--peers-per-process K|auto] [--robust] [--json] [--keep DIR]

The workload (``netbench/workload.py``): scikit-learn digits, X/16, 80/20 stratified split
(``random_state=0``), the 1,437 training samples IID over N peers, an MLP 64-32-10 with the same initial
weights everywhere, 1 local epoch of SGD (lr 0.1, momentum 0.9, batch 16) per round, 5 rounds, mean
aggregation, every peer evaluated on the same 360 test samples.

p2pfl's overlay and delta codec: by default each peer exchanges ``int8`` deltas with the 6 neighbours of a
random-regular graph (8-32 peers; complete below, 8-regular above): a complete graph sends every delta to
all N-1 peers each round, where a server-based run moves 2 copies per client (docs/benchmarks.md, "Bytes:
a sparser overlay and int8"). ``--degree 15 --codec raw`` is the complete-graph parity configuration.
Every p2pfl process runs with one BLAS thread (``BLAS_THREADS``): 16 single-threaded peer processes share
the two cores better than 16 thread pools.

p2pfl runs through the simulation's own engines (``p2pfl.sim``: ``memory``, every peer in one process, or
``libp2p``, one OS process per peer on 127.0.0.1, or ``--peers-per-process K`` peers per process, each its own
host and port: less CPU and memory, lower accuracy on sparse graphs; docs/benchmarks.md, "Several peers per
process") in its FedAvg-like configuration: mean rule without
clipping or nearest-neighbour mixing, no contribution scoring, ``wait_fraction = 1`` and ``wait_before_mix``
(each round mixes the neighbours' versions of the same round; docs/benchmarks.md, "bench_network").
``--robust`` keeps p2pfl's robust defaults instead (geometric median, self-centred clipping, NNM, scoring).

Each side runs in its own child process; this process samples the child's process tree (``/proc``) for CPU
seconds and peak resident memory, summed over all its processes. Wall is from launching the child to its
exit (interpreter start and imports included); start-up is from launch to the first round's start (p2pfl: the
earliest peer's; Flower: the server's first ``configure_train``); seconds per round are the p50/p95 of every
peer's round intervals (Flower: of the server's). ``--compare flower`` needs ``flwr[simulation]`` (the
optional ``compare`` extra); the table then gives p2pfl / Flower for each figure. A FedAvg reference with
p2pfl's own learner (no network) gives the accuracy gossip should reproduce, with the momentum kept across
rounds (p2pfl's learner) and reset every round (a Flower client's new optimiser).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from netbench.child import run_child  # noqa: E402

#: the workload's rounds (netbench.workload.ROUNDS; not imported here: a child must start the libp2p
#: engine's fork server before it imports numpy and p2pfl)
ROUNDS = 5
#: p2pfl's overlay and delta codec by default (docs/benchmarks.md, "Bytes: a sparser overlay and int8"): each
#: peer exchanges int8 deltas with 6 neighbours of a random-regular graph instead of raw deltas with all 15
#: of a complete graph (``--degree 15 --codec raw``: the complete-graph parity configuration)
LEAN_DEGREE = 6
#: the lean overlay up to this many peers (netbench.workload's 8-regular graph above): at 32 peers each of 32
#: processes spends per-link CPU (handshakes, subscriptions, one verified delta per neighbour and round) on
#: 2 cores, and degree 6 (inside issue 17's 6-8) kept the accuracy above FedAvg's at 32 (docs/benchmarks.md,
#: "32 peers: where the CPU goes")
LEAN_UP_TO = 32
CODEC = "int8"

MB = 1e6


#: the thread-pool sizes of the BLAS libraries numpy may use, pinned to 1 in p2pfl's processes
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: what the libp2p engine's fork server imports (``p2pfl.sim.engine_libp2p.PRELOAD``; checked after the run)
PRELOAD = ["p2pfl.sim.worker", "p2pfl.transport.libp2p", "p2pfl.peer", "p2pfl.sim.worker_preload"]


def _start_fork_server() -> None:
    """Start the libp2p engine's fork server first thing: the workers fork from a server that imports libp2p
    and the peer once (~1.5-3 s of CPU), and started here it imports them on the second core while this
    process imports p2pfl and loads the data (``engine_libp2p.start_fork_server``, called
    again by the engine, is then a no-op). Not through that function: importing ``p2pfl.sim.engine_libp2p``
    takes ~1 s itself."""
    import multiprocessing

    if (
        os.environ.get("P2PFL_SIM_SPAWN") == "exec"
        or "forkserver" not in multiprocessing.get_all_start_methods()
    ):
        return
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()


def _packing(value: str) -> int | str:
    """``--peers-per-process``: "auto" or a positive integer (ValueError otherwise)."""
    if value == "auto":
        return value
    k = int(value)
    if k < 1:
        raise ValueError(value)
    return k


def _child(args: argparse.Namespace) -> int:
    """Run one side in this (child) process; write its figures to ``--result``."""
    started = time.time()
    result = Path(args.result)
    if args.side == "flower":
        from netbench import flower_side

        flower_side.run(args.peers, args.rounds, result)
        return 0
    if args.engine == "libp2p":
        _start_fork_server()
    from netbench import p2pfl_side

    figures = p2pfl_side.run(
        args.peers,
        args.engine,
        args.rounds,
        Path(args.out),
        robust=args.robust,
        codec=args.codec,
        degree=args.degree,
        wait_before_mix=args.wait_before_mix == "on",
        peers_per_process=_packing(args.peers_per_process),
    )
    if args.engine == "libp2p":
        from p2pfl.sim.engine_libp2p import PRELOAD as engine_preload

        if engine_preload != PRELOAD:  # not fatal: the workers import the rest themselves, slower
            print(f"warning: bench_network.PRELOAD is not the engine's {engine_preload}", file=sys.stderr)
    figures["child_started_at"] = started
    result.write_text(json.dumps(figures))
    return 0


def _measure(side: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    child_args = ["--_side", side, "--_out", str(work / side), "--peers", str(args.peers)]
    child_args += ["--engine", args.engine, "--rounds", str(args.rounds), "--codec", args.codec]
    child_args += ["--wait-before-mix", args.wait_before_mix, *(["--robust"] if args.robust else [])]
    child_args += ["--degree", str(args.degree)] if args.degree is not None else []
    child_args += ["--peers-per-process", args.peers_per_process]
    env: dict[str, str] = {}
    if side == "p2pfl":
        # one BLAS thread per process: 16 peer processes on 2 cores each running OpenBLAS's thread pool
        # spin against each other (measured on this machine under load: a 360-sample forward pass of the
        # MLP 10.7 ms with OpenBLAS's default threads, 0.2 ms with one). Set before numpy loads OpenBLAS.
        env = {var: os.environ.get(var, "1") for var in BLAS_THREADS}
    launched = time.time()
    figures, usage = run_child(__file__, child_args, work / f"{side}.json", env=env)
    if figures is None:
        raise RuntimeError(f"the {side} side wrote no result")
    first = figures.get("first_round_start_at")
    figures.update(
        wall_s=usage.wall_s,
        startup_s=(first - launched) if first else None,
        cpu_s=usage.cpu_s,
        peak_rss_mb=usage.peak_rss_bytes / MB,
        peak_processes=usage.peak_processes,
        launched_at=launched,
    )
    (work / f"{side}.json").write_text(json.dumps(figures))  # with --keep: netbench/timeline.py reads it
    return figures


ROWS: list[tuple[str, str, str]] = [
    # label, key, format
    ("wall, end to end (s)", "wall_s", "{:.1f}"),
    ("start-up until round 1 (s)", "startup_s", "{:.1f}"),
    ("seconds per round, p50", "round_s_p50", "{:.2f}"),
    ("seconds per round, p95", "round_s_p95", "{:.2f}"),
    ("bytes: payload (MB)", "payload_mb", "{:.2f}"),
    ("bytes: gossip control (MB)", "control_mb", "{:.3f}"),
    ("bytes: libp2p overhead (MB)", "libp2p_mb", "{:.2f}"),
    ("bytes: discovery (MB)", "discovery_mb", "{:.2f}"),
    ("bytes: total on the wire (MB)", "total_mb", "{:.2f}"),
    ("accuracy after the last round, mean", "acc_mean", "{:.1%}"),
    ("accuracy after the last round, min", "acc_min", "{:.1%}"),
    ("CPU seconds, all processes", "cpu_s", "{:.1f}"),
    ("peak RSS, all processes (MB)", "peak_rss_mb", "{:.0f}"),
    ("processes", "peak_processes", "{:d}"),
]


def _derive(f: dict[str, Any]) -> dict[str, Any]:
    f = dict(f)
    f["payload_mb"] = f.get("bytes_payload", 0) / MB
    f["overhead_mb"] = f.get("bytes_overhead", 0) / MB
    f["control_mb"] = f["bytes_control"] / MB if "bytes_control" in f else None
    f["libp2p_mb"] = f["bytes_libp2p"] / MB if "bytes_libp2p" in f else None
    f["discovery_mb"] = f.get("bytes_discovery", 0) / MB
    # the memory engine and Flower's simulation have no wire: their total is the payload
    f["total_mb"] = (f.get("bytes_wire") or f.get("bytes_payload", 0)) / MB
    return f


def _fmt(fmt: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return fmt.format(v)


def table(p2pfl: dict[str, Any], flower: dict[str, Any] | None, args: argparse.Namespace) -> str:
    p = _derive(p2pfl)
    f = _derive(flower) if flower else None
    head = f"p2pfl {args.peers} peers ({args.engine}, {p['config']})"
    lines = [f"| | {head} |" + (" Flower (simulation) | p2pfl / Flower |" if f else "")]
    lines.append("|---|---|" + ("---|---|" if f else ""))
    for label, key, fmt in ROWS:
        row = f"| {label} | {_fmt(fmt, p.get(key))} |"
        if f is not None:
            a, b = p.get(key), f.get(key)
            ratio = (
                f"{a / b:.2f}x" if isinstance(a, int | float) and isinstance(b, int | float) and b else "-"
            )
            row += f" {_fmt(fmt, b)} | {ratio} |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=16)
    ap.add_argument("--engine", choices=("libp2p", "memory"), default="libp2p")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--compare", choices=("flower",), default=None)
    ap.add_argument("--robust", action="store_true", help="p2pfl's robust defaults instead of FedAvg-like")
    ap.add_argument(
        "--codec", default=CODEC, help=f"p2pfl's delta codec: raw, fp16, int8 or topk:<density> ({CODEC})"
    )
    ap.add_argument(
        "--degree",
        type=int,
        default=None,
        help=f"p2pfl's overlay: a random-regular graph of this degree (peers - 1: complete; default "
        f"{LEAN_DEGREE} for {LEAN_DEGREE + 2}-{LEAN_UP_TO} peers, complete below, 8-regular above)",
    )
    ap.add_argument(
        "--wait-before-mix",
        choices=("on", "off"),
        default="on",
        help="p2pfl's round order: train, publish, wait, mix (on) or wait, train, publish and mix (off)",
    )
    ap.add_argument(
        "--peers-per-process",
        default="1",
        metavar="K",
        help="libp2p: peers per worker process, each its own host and port in one trio loop, or 'auto' "
        "(peers / cores); 1: one process per peer (the default; docs/benchmarks.md, 'Several peers per "
        "process')",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", metavar="DIR", help="keep each side's run directory (logs, traces) under DIR")
    ap.add_argument("--_side", dest="side", choices=("p2pfl", "flower"), help=argparse.SUPPRESS)
    ap.add_argument("--_result", dest="result", help=argparse.SUPPRESS)
    ap.add_argument("--_out", dest="out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peers < 2:
        ap.error("--peers must be at least 2")
    try:
        _packing(args.peers_per_process)
    except ValueError:
        ap.error("--peers-per-process must be a positive integer or 'auto'")
    if args.degree is None and LEAN_DEGREE + 2 <= args.peers <= LEAN_UP_TO:
        args.degree = LEAN_DEGREE
    if args.side:
        return _child(args)
    if args.compare == "flower":
        try:
            import flwr  # noqa: F401
        except ImportError:
            print("error: --compare flower needs flwr: pip install -e '.[compare]'", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="bench_network-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        p2pfl = _measure("p2pfl", args, work)
        flower = _measure("flower", args, work) if args.compare == "flower" else None
    from netbench import workload as wl

    w = wl.load_workload(args.peers)
    reference = {
        "fedavg_momentum_kept": wl.fedavg_reference(w, args.rounds, reset_momentum=False)[-1],
        "fedavg_momentum_reset": wl.fedavg_reference(w, args.rounds, reset_momentum=True)[-1],
    }
    if args.json:
        print(json.dumps({"p2pfl": p2pfl, "flower": flower, "reference": reference}, indent=2))
        return 0
    print(table(p2pfl, flower, args))
    print(
        f"\nFedAvg with p2pfl's learner, no network, round {args.rounds}: "
        f"{reference['fedavg_momentum_kept']:.1%} (momentum kept across rounds, as p2pfl's learner does), "
        f"{reference['fedavg_momentum_reset']:.1%} (momentum reset each round, as a Flower client's new "
        "optimiser does)"
    )
    if p2pfl.get("timed_out") or p2pfl.get("rounds_done_min", 0) < args.rounds:
        print("warning: not every p2pfl peer completed its rounds", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
