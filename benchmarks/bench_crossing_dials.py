"""How long N libp2p transports that all dial each other at once (as CLI peers started together dial their
static peers) take to settle, against the same transports when only the lower peer id of each pair dials.

Settled: every pair holds exactly one connection and every transport lists the other N-1 as listeners
(subscribed to its announcements), and both still hold 2 s later. Unconnected pairs are dialled again every
second, as a peer's housekeeping re-dials its static peers. Each trial uses fresh identities and ports; all
transports share this process's trio loop. Printed: seconds to settle per trial and the duplicate-pair
resyncs each transport ran (p2pfl.transport.libp2p.connections), with the load average.

    python benchmarks/bench_crossing_dials.py [--peers 4] [--trials 8]

In one process this never showed the links that stayed broken; bench_crossing_dials_procs.py (one process per
transport, with request traffic) did.
"""

from __future__ import annotations

import argparse
import os
import statistics
from contextlib import AsyncExitStack, suppress

import trio
from libp2p.peer.id import ID

from p2pfl.transport.libp2p import Libp2pTransport

SETTLE_LIMIT_S = 60.0
LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def _pairs(ts: list[Libp2pTransport], directed: bool) -> list[tuple[Libp2pTransport, Libp2pTransport]]:
    return [(a, b) for a in ts for b in ts if a is not b and (not directed or a.peer_id < b.peer_id)]


def _settled(ts: list[Libp2pTransport]) -> bool:
    n = len(ts)
    one_each = all(_conns(a, b) == 1 for a, b in _pairs(ts, False))
    return one_each and all(len(t.listeners()) == n - 1 for t in ts)


def _conns(a: Libp2pTransport, b: Libp2pTransport) -> int:
    return len(a.host.get_network().get_connections(ID.from_base58(b.peer_id)))


async def _dial(a: Libp2pTransport, b: Libp2pTransport) -> None:
    with suppress(Exception):  # a crossing dial may fail; the next round dials again
        await a.connect(b.listen_addrs[0])


async def trial(n: int, first_seed: int, directed: bool) -> tuple[float, list[int]]:
    """Seconds until settled (inf past SETTLE_LIMIT_S) and each transport's resync count."""
    async with AsyncExitStack() as stack:
        ts = [
            await stack.enter_async_context(
                Libp2pTransport.open(seed=bytes([first_seed + i]) * 32, network_id="x", listen=LOOPBACK)
            )
            for i in range(n)
        ]
        t0 = trio.current_time()
        while trio.current_time() - t0 < SETTLE_LIMIT_S:
            async with trio.open_nursery() as nursery:
                for a, b in _pairs(ts, directed):
                    if not _conns(a, b):
                        nursery.start_soon(_dial, a, b)
            await trio.sleep(1.0)
            if _settled(ts):
                await trio.sleep(2.0)
                if _settled(ts):
                    return trio.current_time() - t0 - 2.0, [t.stats.connections_resynced for t in ts]
        return float("inf"), [t.stats.connections_resynced for t in ts]


async def main(peers: int, trials: int) -> None:
    print(f"{peers} transports, {trials} trials each, load average {os.getloadavg()[0]:.1f}")
    for directed in (False, True):
        name = "lower id dials" if directed else "both dial"
        times = []
        for k in range(trials):
            dt, resyncs = await trial(peers, 1 + (2 * k + directed) * peers, directed)
            times.append(dt)
            print(f"  {name} trial {k}: {dt:.2f} s, resyncs {resyncs}")
        print(f"{name}: median {statistics.median(times):.2f} s, max {max(times):.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    trio.run(main, args.peers, args.trials)
