"""Crossing dials between N libp2p transports, one OS process each (as CLI peers started together), under a
dial policy: does every pair end with one connection and each end subscribed to the other, and when?

Each process opens a transport on a fixed port, waits for the common start, then every second dials each
peer it is not connected to and that the policy lets it dial (``both``: every peer at once; ``lower-first``:
the lower peer id of a pair at once, the higher one after 2 s unconnected, as p2pfl.protocol.dialling), and
sends a small request to each peer every 0.1 s (a joining peer asks its neighbours for snapshots; a request
to an unconnected peer dials it too). Every 0.25 s it prints whether each pair is *good*: exactly one open
connection, pubsub's stream on it, each end subscribed to the other's topic. A trial's settle time is when all
pairs turned good for the rest of the trial; a trial that ends with a pair not good has failed. One trial in
the multi-process harness of 2026-12-05 reproduced the states the in-process bench_crossing_dials never did.
The transport code is whichever ``p2pfl`` is imported (PYTHONPATH selects a checkout to compare).

    python benchmarks/bench_crossing_dials_procs.py [--peers 4] [--trials 8] [--seconds 10] [--policy both]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path

GRACE_S = 2.0
ECHO = "/bench/echo/1"


def _free_base(n: int) -> int:
    for _ in range(100):
        base = random.randint(20000, 60000)
        try:
            for k in range(n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


async def _peer(args: list[object]) -> None:
    """One transport process; ``args``: index, peers, base port, first seed, seconds, policy, go file."""
    import trio
    from libp2p.peer.id import ID

    from p2pfl.identity import Identity
    from p2pfl.transport.libp2p import Libp2pTransport

    i, n, base, first_seed, seconds, policy, go = args
    assert isinstance(i, int) and isinstance(n, int) and isinstance(base, int) and isinstance(first_seed, int)
    assert isinstance(seconds, float | int) and isinstance(policy, str) and isinstance(go, str)
    ids = [Identity(bytes([first_seed + k]) * 32).peer_id for k in range(n)]
    addrs = [f"/ip4/127.0.0.1/tcp/{base + k}/p2p/{ids[k]}" for k in range(n)]
    others = [k for k in range(n) if k != i]
    listen = f"/ip4/127.0.0.1/tcp/{base + i}"
    async with Libp2pTransport.open(seed=bytes([first_seed + i]) * 32, network_id="x", listen=listen) as t:

        async def echo(peer: str, body: bytes) -> bytes:
            return body

        t.set_request_handler(ECHO, echo)
        Path(f"{go}.ready{i}").touch()
        while not os.path.exists(go):
            await trio.sleep(0.02)
        start = float(Path(go).read_text())
        await trio.sleep(max(0.0, start - time.time()))

        def good(k: int) -> bool:
            pid = ID.from_base58(ids[k])
            conns = [c for c in t.host.get_network().get_connections(pid) if not c.is_closed]
            stream = t._pubsub.peers.get(pid)
            return (
                len(conns) == 1
                and stream is not None
                and stream.muxed_conn is conns[0].muxed_conn
                and ids[k] in t.listeners()
                and ids[k] in t.subscribed_peers()
            )

        async def dial(k: int) -> None:
            with suppress(Exception):
                await t.connect(addrs[k])

        async def requests() -> None:
            while True:
                for k in others:
                    with suppress(Exception):
                        await t.request(ids[k], ECHO, b"x" * 2000, max_response=4096, timeout=1.0)
                await trio.sleep(0.1)

        async def report() -> None:
            while True:
                line = {"i": i, "t": time.time() - start, "good": [good(k) for k in others]}
                print(json.dumps({**line, "resyncs": t.stats.connections_resynced}), flush=True)
                await trio.sleep(0.25)

        since: dict[int, float] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(requests)
            nursery.start_soon(report)
            while time.time() < start + seconds:
                connected = set(t.connected_peers())
                async with trio.open_nursery() as dials:
                    for k in others:
                        if ids[k] in connected:
                            since.pop(k, None)
                            continue
                        first = since.setdefault(k, time.time())
                        if policy == "both" or ids[i] < ids[k] or time.time() - first >= GRACE_S:
                            dials.start_soon(dial, k)
                await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
        print(
            json.dumps({"i": i, "t": seconds, "good": [good(k) for k in others], "final": True}), flush=True
        )
        await trio.sleep(max(0.0, start + seconds + 2.0 - time.time()))  # stay up while the others look


def trial(k: int, n: int, seconds: float, policy: str, work: Path) -> tuple[float, int]:
    """(settle time, inf if a pair was not good at the end; total resyncs)."""
    base, go = _free_base(n), str(work / f"go{k}")
    first_seed = 1 + (k * n) % 200
    cmd = [sys.executable, __file__, "--child"]
    procs = [
        subprocess.Popen(
            [*cmd, json.dumps([i, n, base, first_seed, seconds, policy, go])],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i in range(n)
    ]
    deadline = time.time() + 120
    while time.time() < deadline and not all(os.path.exists(f"{go}.ready{i}") for i in range(n)):
        time.sleep(0.05)
    Path(go + ".tmp").write_text(str(time.time() + 0.3))
    os.rename(go + ".tmp", go)
    lines = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        lines += [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    finals = [x for x in lines if x.get("final")]
    if len(finals) < n or not all(all(x["good"]) for x in finals):
        return float("inf"), sum(
            max((x.get("resyncs", 0) for x in lines if x["i"] == i), default=0) for i in range(n)
        )
    bad = [x["t"] for x in lines if not x.get("final") and not all(x["good"])]
    resyncs = sum(max((x.get("resyncs", 0) for x in lines if x["i"] == i), default=0) for i in range(n))
    return (max(bad) if bad else 0.0), resyncs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--policy", choices=["both", "lower-first"], default="both")
    args = parser.parse_args()
    import p2pfl

    code = Path(p2pfl.__file__).parents[1]
    print(f"{args.peers} processes, policy {args.policy}, code {code}, load {os.getloadavg()[0]:.1f}")
    times = []
    with tempfile.TemporaryDirectory() as work:
        for k in range(args.trials):
            dt, resyncs = trial(k, args.peers, args.seconds, args.policy, Path(work))
            times.append(dt)
            print(
                f"  trial {k}: settled {dt:.2f} s, resyncs {resyncs}, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    failed = sum(t == float("inf") for t in times)
    median = statistics.median(times)
    print(f"{args.policy}: {failed} of {len(times)} not settled at {args.seconds} s; median {median:.2f} s")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        import trio

        trio.run(_peer, json.loads(sys.argv[2]))
    else:
        main()
