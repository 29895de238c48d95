"""Honest seconds per round of real peers (in-memory transport, digits, ``local_steps`` steps) with and
without one neighbour that starts a round only every 9 s (``round_interval_s = 9``). Run from the repository
root: ``python benchmarks/bench_slow_neighbour.py [rounds] [local_steps] [wait_fraction]``."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pfl.peer import Peer
from p2pfl.sim.data import peer_splits
from p2pfl.transport.memory import MemoryNetwork
from tests.test_peer import connect_all, learner_for, memory_peer


async def run(n: int, slow: bool, rounds: int, wait_fraction: float, steps: int) -> float:
    splits = peer_splits("digits", n, partition_kind="iid", seed=1)
    net = MemoryNetwork()
    async with AsyncExitStack() as stack:
        peers = []
        for i in range(n):
            cfg = {"wait_fraction": wait_fraction, "scoring_enabled": False, "local_steps": steps}
            if slow and i == n - 1:
                cfg["round_interval_s"] = 9.0
            peer = memory_peer(i, learner_for(splits[i], i), net, **cfg)
            peers.append(await stack.enter_async_context(peer))
        await connect_all(peers)
        honest = peers[:-1] if slow else peers
        started = trio.current_time()
        done: list[float] = []

        async def one(p: Peer, k: int) -> None:
            await p.run(k)
            done.append(trio.current_time() - started)

        async with trio.open_nursery() as nursery:
            for p in honest:
                nursery.start_soon(one, p, rounds)
            if slow:
                nursery.start_soon(partial(peers[-1].run, until=lambda: len(done) == len(honest)))
        return max(done) / rounds


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    fractions = [float(sys.argv[3])] if len(sys.argv) > 3 else [1.0, 0.75]
    for n in (5, 3):
        for fraction in fractions:
            base = trio.run(run, n, False, rounds, fraction, steps)
            with_slow = trio.run(run, n, True, rounds, fraction, steps)
            ratio = with_slow / base
            print(f"| {n - 1} honest + 1 slow | {fraction} | {base:.2f} | {with_slow:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
