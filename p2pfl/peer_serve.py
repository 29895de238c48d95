"""A peer that finished its rounds and only serves its neighbours keeps its per-identity tables bounded.

``p2pfl peer`` with ``rounds`` set serves its final model after the last round until it is stopped. Its
replicas and per-identity state were forgotten only at the end of a round (``EngineCore.forget_idle``), so
a serving peer kept every identity that published to it from then on. :func:`serve_until_stopped` runs the
same forgetting every ``interval`` seconds instead (so a replica lingers at most ``forget_after_s`` plus one
interval), and readmits peers whose eviction expired, as a round would. It trains and publishes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from p2pfl.protocol import Action, GossipEngine

log = logging.getLogger("p2pfl.peer")


def serve_interval(engine: GossipEngine) -> float:
    """How often a serving peer forgets: ``max_staleness_s`` (a tenth of the default horizon)."""
    return engine.config.max_staleness_s


async def tend_identities(
    engine: GossipEngine, execute: Callable[[Sequence[Action]], Awaitable[None]], now: float
) -> list[str]:
    """What a round does for the identity tables, when no round runs (serving; paused solo, p2pfl.peer_solo):
    readmit expired evictions (``execute`` carries out the actions) and forget idle identities; returns the
    replicas forgotten."""
    await execute(engine.readmissions(now))
    return engine.forget_idle(now)


async def serve_until_stopped(
    engine: GossipEngine,
    stopped: trio.Event,
    execute: Callable[[Sequence[Action]], Awaitable[None]],
    interval_s: float | None = None,
) -> int:
    """Until ``stopped`` is set, every ``interval_s`` (default :func:`serve_interval`): readmit expired
    evictions (``execute`` carries out the actions) and forget idle identities. Returns the passes run."""
    interval = serve_interval(engine) if interval_s is None else interval_s
    passes = 0
    while not stopped.is_set():
        with trio.move_on_after(interval):
            await stopped.wait()
        if stopped.is_set():
            break
        gone = await tend_identities(engine, execute, trio.current_time())
        passes += 1
        if gone:
            log.debug("serving: forgot %d idle replicas", len(gone))
    return passes
