"""Benchmark the roster: its size, the cost of decoding and verifying it, and of one admission check.

For 100, 1,000 and 10,000 listed members: the encoded size, the full decode + signature check (what a peer
pays to adopt a newer roster), the raw-field pre-check (what it pays to refuse a stale, foreign or badly
signed one) and one ``Gate.check`` (asked at every connection, stream and announcement).

    python benchmarks/bench_roster.py [--reps N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from p2pfl.identity import Identity, _key_of_peer_id
from p2pfl.identity import verify as verify_signature
from p2pfl.roster import Gate, Member, Org, Roster, decode_roster, encode_roster, sign, verify
from p2pfl.roster.codec import peek_roster


def best(fn: Callable[[], object], reps: int) -> float:
    """Best of ``reps`` runs, each with a cold peer-id cache (a peer decodes a new roster once)."""
    times = []
    for _ in range(reps):
        _key_of_peer_id.cache_clear()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def precheck(data: bytes) -> bool:
    _, _, key, body, sig = peek_roster(data)
    return verify_signature(key, body, sig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions, best kept (default: 3)")
    args = parser.parse_args()
    operator = Identity(bytes([200]) * 32)
    print("| members | bytes | decode + verify | pre-check | gate check |")
    print("|---:|---:|---:|---:|---:|")
    for n in (100, 1_000, 10_000):
        ids = sorted(Identity(i.to_bytes(32, "big")).peer_id for i in range(1, n + 1))
        roster = Roster(
            "net",
            operator.public_key,
            orgs=(Org("a", operator.public_key, 10**6, 10_000),),
            members=tuple(Member(p, "a") for p in ids),
        )
        roster = sign(roster, operator, version=1, expires_ms=2**62)
        data = encode_roster(roster)
        full = best(lambda: verify(decode_roster(data), network_id="net", now_ms=0), args.reps)  # noqa: B023
        cheap = best(lambda: precheck(data), args.reps)  # noqa: B023
        gate = Gate(roster, network_id="net")
        checks = 100_000
        t = time.perf_counter()
        for i in range(checks):
            gate.check(ids[i % n], 0)
        per_check = (time.perf_counter() - t) / checks
        row = [f"{n:,}", f"{len(data):,}", f"{full * 1e3:.1f} ms", f"{cheap * 1e3:.2f} ms"]
        print("| " + " | ".join([*row, f"{per_check * 1e6:.2f} µs"]) + " |")


if __name__ == "__main__":
    main()
