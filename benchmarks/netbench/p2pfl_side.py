"""The p2pfl side of bench_network: the workload through the simulation's own engines (memory or libp2p).

Runs :func:`p2pfl.sim.runner.run_memory` or :func:`p2pfl.sim.engine_libp2p.run_libp2p` with the workload's
splits and returns the figures of one run. Times are absolute (``time.time()``) so the parent can measure
start-up from the moment it launched this process.

Bytes: ``payload`` is the application bytes every peer received (gossiped envelopes once per receiver,
request and response bodies: delta fetches, snapshots); ``wire`` is every byte on the peers' TCP
connections (libp2p only: Noise + Yamux framing, handshakes, gossipsub control and duplicate deliveries, and
the payload itself); ``overhead = wire - payload``, split into gossip ``control`` (the gossipsub RPC bytes
that carry no message: GRAFT/PRUNE/IHAVE/IWANT, subscriptions, peer records;
``TransportStats.gossip_sent_by``) and ``libp2p`` (the rest: Noise and yamux framing, yamux window
updates, the handshakes, the pubsub fields around each message). Discovery: the benchmark dials its
neighbours from static addresses (no bootstrap registry), so it sends no discovery bytes.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio

from . import workload as wl


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def run(
    peers: int,
    engine: str,
    rounds: int,
    out: Path,
    *,
    robust: bool = False,
    codec: str = "raw",
    degree: int | None = None,
    wait_before_mix: bool = True,
    peers_per_process: int | str = 1,
) -> dict[str, Any]:
    from p2pfl.sim.engine_libp2p import run_libp2p
    from p2pfl.sim.runner import run_memory

    w = wl.load_workload(peers)
    sc = wl.scenario(peers, transport=engine, rounds=rounds, local_steps=w.local_steps, degree=degree)
    if robust:  # p2pfl's robust defaults (geometric median, clipping, NNM, scoring), same pacing
        sc = sc.replace(aggregation={"rule": "geomed", "nnm": True, "self_clip_scale": 1.0})
        sc = sc.replace(scoring={"enabled": True})
    if not wait_before_mix:  # the old round order (docs/benchmarks.md, "bench_network")
        sc = sc.replace(run={"wait_before_mix": False})
    if peers_per_process != 1:  # several peers per worker process (libp2p engine)
        sc = sc.replace(run={"peers_per_process": peers_per_process})
    if codec != "raw":  # a lossy delta codec (docs/wire-format.md section 7)
        sc = sc.replace(run={"codec": codec})
    splits = w.splits()
    out.mkdir(parents=True, exist_ok=True)
    called = time.time()
    if engine == "memory":
        output = trio.run(lambda: run_memory(sc, out, quiet=True, splits=splits))
    else:
        output = run_libp2p(sc, out, quiet=True, splits=splits)
    returned = time.time()
    honest = [p for p in output.peers if p["honest"]]
    accs = [float(p["final_accuracy"]) for p in honest if p.get("final_accuracy") is not None]
    starts, per_round = [], []
    for p in honest:
        trace = p["trace"]
        ends = [called + float(row["t"]) for row in trace]
        if trace:
            starts.append(ends[0] - float(trace[0].get("round_s", 0.0)))
            per_round.append(float(trace[0].get("round_s", 0.0)))
        per_round.extend(b - a for a, b in itertools.pairwise(ends))
    payload = sum(sum(p.get("received_by", {}).values()) for p in output.peers)
    wire = sum(int(p.get("wire_sent", 0)) for p in output.peers)
    by_kind: dict[str, int] = {}
    gossip_parts: dict[str, int] = {}
    for p in output.peers:
        for k, v in p.get("received_by", {}).items():
            by_kind[k] = by_kind.get(k, 0) + int(v)
        for k, v in p.get("gossip_sent_by", {}).items():
            gossip_parts[k] = gossip_parts.get(k, 0) + int(v)
    # gossip control: GRAFT/PRUNE/IHAVE/IWANT/IDONTWANT plus the RPCs without messages (subscriptions,
    # peer records); the rest of the wire beyond payload and control is libp2p's own: Noise and yamux
    # framing, handshakes (multistream, Noise, identify) and the pubsub fields around each message
    control = gossip_parts.get("control", 0) + gossip_parts.get("record", 0)
    return {
        "side": "p2pfl",
        "engine": engine,
        "peers": peers,
        "rounds": rounds,
        "config": "robust" if robust else "fedavg",
        "peers_per_process": peers_per_process,
        "rounds_done_min": min((int(p["rounds"]) for p in honest), default=0),
        "called_at": called,
        "returned_at": returned,
        "run_wall_s": output.wall_s,
        "timed_out": output.timed_out,
        "first_round_start_at": min(starts) if starts else None,
        "last_round_start_at": max(starts) if starts else None,
        "round_s_p50": _pct(per_round, 50),
        "round_s_p95": _pct(per_round, 95),
        "round_s_mean": statistics.fmean(per_round) if per_round else float("nan"),
        "acc_mean": statistics.fmean(accs) if accs else float("nan"),
        "acc_min": min(accs) if accs else float("nan"),
        "acc_peers": len(accs),
        "bytes_payload": payload,
        "bytes_payload_by": by_kind,
        "bytes_wire": wire,
        "bytes_overhead": max(0, wire - payload) if wire else 0,
        "bytes_control": control,
        "bytes_libp2p": max(0, wire - payload - control) if wire else 0,
        "gossip_sent_by": gossip_parts,
        "online_s": _timing(out).get("online_s"),
        "bytes_discovery": 0,
        "rejected": _rejections(output.peers),
    }


def _timing(out: Path) -> dict[str, Any]:
    """The libp2p engine's ``timing.json`` (start-up until every worker listens, shutdown), if written."""
    try:
        data = json.loads((out / "timing.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _rejections(peers: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in peers:
        for k, v in p.get("rejected", {}).items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))
