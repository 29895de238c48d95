"""What the freshness rule (p2pfl/protocol/freshness.py) costs an honest message and saves on a replayed one.

A receiver handles a small inline delta (10 KB, the default scenario's MLP) as the peer does: the gossip
validator, then the handler (``accept_gossip`` + ``handle_announce``, rate limits on but far above the
load). Measured in the same run, per message:

- an honest copy of a version the receiver holds, judged without the wall clock (the reference: what every
  message cost before the rule) and with it (the rule's overhead: one integer comparison per message);
- a copy of the same version signed an hour ago, replayed: without the wall clock it is verified, decoded and
  refused on delivery (what a replay cost before), with it it is refused before the verify.

    python benchmarks/bench_replay.py [--repeat 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from p2pfl.identity import Identity
from p2pfl.protocol import GossipEngine, ProtocolConfig, Publish
from p2pfl.protocol.ratelimit import RateConfig

PER_CALL = 200
HOUR_MS = 3_600_000


def best_of(cases: dict[str, Callable[[], None]], repeat: int) -> dict[str, float]:
    """Each case's best time per message (us), the cases interleaved: a load that comes and goes (a shared
    machine) then weighs on all of them alike."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeat):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: t / PER_CALL * 1e6 for name, t in best.items()}


def _envelope(stamp_ms: int, n: int = 2410) -> tuple[GossipEngine, bytes]:
    model = {"w": np.zeros(n, np.float32)}
    sender = GossipEngine(Identity(bytes([1]) * 32), ProtocolConfig(network_id="bench"), model)
    trained = {"w": np.random.default_rng(1).standard_normal(n, dtype=np.float32)}
    act = sender.finish_round(trained, 0.0, timestamp_ms=stamp_ms).actions[0]
    assert isinstance(act, Publish)
    return sender, act.envelope


def measure(repeat: int) -> dict[str, float]:
    now_ms = int(time.time() * 1000)
    sender, fresh = _envelope(now_ms)
    _, old = _envelope(now_ms - HOUR_MS)  # the same version, signed an hour ago
    rates = RateConfig(sender_rate=1e9, sender_burst=1e9, relay_rate=1e9, relay_burst=1e9)
    receiver = GossipEngine(
        Identity(bytes([2]) * 32),
        ProtocolConfig(network_id="bench"),
        {"w": np.zeros(2410, np.float32)},
        scoring_enabled=False,
        rates=rates,
    )
    receiver.handle_announce(fresh, sender.peer_id, 0.0)  # it holds the version: later copies are copies

    def receive(data: bytes, wall: int | None) -> Callable[[], None]:
        def run() -> None:
            for _ in range(PER_CALL):
                if receiver.accept_gossip(data, "relay", 1.0, wall_ms=wall):
                    receiver.handle_announce(data, "relay", 1.0, wall_ms=wall)

        return run

    cases = {
        "honest_without_us": receive(fresh, None),
        "honest_with_us": receive(fresh, now_ms),
        "replay_without_us": receive(old, None),
        "replay_with_us": receive(old, now_ms),
    }
    return best_of(cases, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = measure(args.repeat)
    if args.json:
        print(json.dumps(out))
        return
    for name, key in (("honest copy", "honest"), ("stale replay", "replay")):
        without, with_ = out[f"{key}_without_us"], out[f"{key}_with_us"]
        print(f"{name:13s} {without:7.1f} us without the rule, {with_:7.1f} us with it")


if __name__ == "__main__":
    main()
