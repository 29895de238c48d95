"""A peer inside an asyncio application (a web service, a bot, a notebook...).

Run: python docs/examples/asyncio_app.py   (a few seconds; prints progress and accuracy)

p2pfl runs on trio; an asyncio program drives it through ``p2pfl.PeerHandle``, which runs each peer in a
trio thread of its own. Every handle method is thread-safe: ``status()``, ``params()`` and ``listen_addrs``
answer within microseconds-milliseconds and may be called directly from a coroutine; ``start()`` (seconds:
it brings the peer online), ``connect()`` (a network dial) and ``stop()`` (finishes the current round)
block, so await them through ``asyncio.to_thread`` to keep the event loop responsive.
"""

from __future__ import annotations

import asyncio

from _digits import N_CLASSES, peer_data

import p2pfl

ROUNDS = 8


async def start_peer(index: int, static_peers: tuple[str, ...] = ()) -> p2pfl.PeerHandle:
    train, val, _ = peer_data(index, num_peers=2)
    learner = p2pfl.NumpySoftmaxLearner(train, val, N_CLASSES, hidden=32, seed=index)
    config = p2pfl.PeerConfig(
        network_id="digits-demo",
        static_peers=static_peers,  # dialled on start, and re-dialled while disconnected
        max_round_wait_s=2.0,
        status_interval_s=0,
    )
    return await asyncio.to_thread(p2pfl.PeerHandle.start, config, learner, rounds=ROUNDS, timeout=60)


async def heartbeat(stop: asyncio.Event) -> int:
    """Stands for the rest of the application: it keeps running while the peers learn."""
    ticks = 0
    while not stop.is_set():
        ticks += 1
        await asyncio.sleep(0.05)
    return ticks


async def main() -> None:
    a = await start_peer(0)
    b = await start_peer(1, static_peers=(a.listen_addrs[0],))
    done = asyncio.Event()
    app = asyncio.create_task(heartbeat(done))
    try:
        async with asyncio.timeout(60):
            while True:
                sa = await asyncio.to_thread(a.status)  # through a worker thread...
                sb = b.status()  # ...or directly: it is quick
                print(f"  A round={sa['round']} neighbours={sa['neighbours']} | B round={sb['round']}")
                if min(sa["round"], sb["round"]) >= ROUNDS:
                    break
                await asyncio.sleep(0.2)
        for name, handle in (("A", a), ("B", b)):
            status = handle.status()
            print(f"peer {name}: round={status['round']} val_acc={status['val_accuracy']:.3f}")
    finally:
        done.set()
        await asyncio.gather(asyncio.to_thread(a.stop), asyncio.to_thread(b.stop))
    print(f"stopped; the asyncio loop ticked {await app} times meanwhile")


if __name__ == "__main__":
    asyncio.run(main())
