"""CPU seconds per gossip delivery over py-libp2p: the per-message cost that one peer process per peer pays.

    python benchmarks/bench_gossip_cpu.py [--receivers 6] [--messages 300] [--size 3000] [--repeat 3]

One publisher and ``--receivers`` receivers (the benchmark overlay's degree), each a
:class:`~p2pfl.transport.Libp2pTransport` on 127.0.0.1, all in this one process and one trio loop. The
receivers dial the publisher and subscribe to its topic; then the publisher broadcasts ``--messages``
messages of ``--size`` bytes (an ``int8`` delta envelope of the benchmark's MLP is ~3 KB) and the process
CPU (``time.process_time``) from the first broadcast until every receiver has every message is divided by
the deliveries. Both ends are in the figure (the publisher's send path too), no p2pfl validator is set, so
it is the transport's and py-libp2p's share of a delivery: gossipsub's RPC parse, the per-message task,
the signature check, delivery, Noise and yamux. CPU, not wall, so another job on the machine changes it
little; the publish rate limit (50 per second) sets the wall. Compare two checkouts by running this file
with each one's interpreter (docs/benchmarks.md, "32 peers, second pass").
"""

from __future__ import annotations

import argparse
import time
from contextlib import AsyncExitStack

import trio

from p2pfl.transport import Libp2pConfig, Libp2pTransport

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


async def _once(receivers: int, messages: int, size: int) -> float:
    """CPU seconds per delivery of one run."""
    cfg = Libp2pConfig()
    async with AsyncExitStack() as stack:
        ts = [
            await stack.enter_async_context(
                Libp2pTransport.open(
                    seed=bytes([i + 1]) * 32, network_id="bench", listen=LOOPBACK, config=cfg
                )
            )
            for i in range(receivers + 1)
        ]
        pub, recv = ts[0], ts[1:]
        counts = [0] * receivers
        for i, t in enumerate(recv):

            async def handler(forwarder: str, data: bytes, i: int = i) -> None:
                counts[i] += 1

            t.set_gossip_handler(handler)
            await t.connect(pub.listen_addrs[0])
        with trio.fail_after(30):
            while len(pub.subscribed_peers()) < receivers or any(not t.listeners() for t in recv):
                await trio.sleep(0.05)
        await trio.sleep(1.0)  # identify, hellos and the first heartbeats are over
        started = time.process_time()
        for j in range(messages):
            await pub.broadcast(bytes([j % 256]) * size)
        with trio.fail_after(120):
            while sum(counts) < receivers * messages:
                await trio.sleep(0.01)
        return (time.process_time() - started) / (receivers * messages)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--receivers", type=int, default=6)
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--size", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    runs = [trio.run(_once, args.receivers, args.messages, args.size) for _ in range(args.repeat)]
    per = ", ".join(f"{r * 1e6:.0f}" for r in runs)
    print(
        f"{args.receivers} receivers, {args.messages} messages of {args.size} B: {per} us of CPU per delivery"
    )
    print(f"(load average {load} at the start)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
