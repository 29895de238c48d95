"""CPU time of one engine receiving 10,000 validly signed header-only announcements from one neighbour within
1 s of fake time, with the rate limits on and off. Run from the repository root:
``python benchmarks/bench_flood.py``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pfl.identity import Identity
from p2pfl.protocol import FetchPayload, RequestSnapshot
from p2pfl.protocol.ratelimit import RateConfig, RateGate
from p2pfl.wire import seal
from tests.protocol.test_equivocation import _header_only, _with_replica_of

N = 10_000
ATTACKER = Identity(bytes([9]) * 32)


def run(*, same_version: bool, limits: bool) -> tuple[float, int, dict[str, int]]:
    b = _with_replica_of(ATTACKER)
    if not limits:
        b.rates = RateGate(RateConfig(sender_rate=1e9, sender_burst=1e9, relay_rate=1e9, relay_burst=1e9))
    rep = b.replicas[ATTACKER.peer_id]
    size = b._payload_sizes["raw"]
    seqs = [rep.seq + 1 + (0 if same_version else i) for i in range(N)]
    msgs = [
        seal(
            ATTACKER,
            _header_only(
                ATTACKER, rep.digest, b.layout.arch, size, seq=rep.seq + 1 + (0 if same_version else i), n=i
            ),
            None,
        )
        for i, seq in enumerate(seqs)
    ]
    started, actions = time.process_time(), 0
    for i, m in enumerate(msgs):
        now = 10 + i / N
        if b.accept_gossip(m, ATTACKER.peer_id, now):
            out = b.handle_announce(m, ATTACKER.peer_id, now)
            actions += sum(isinstance(a, FetchPayload | RequestSnapshot) for a in out)
    return time.process_time() - started, actions, dict(b.rejections)


def main() -> None:
    for same in (True, False):
        for limits in (False, True):
            cpu, actions, rejected = run(same_version=same, limits=limits)
            what = "one version" if same else f"{N} versions"
            state = "on" if limits else "off"
            print(f"{what}, limits {state}: {cpu:.2f} s CPU, {actions} fetch/snapshot actions, {rejected}")


if __name__ == "__main__":
    main()
