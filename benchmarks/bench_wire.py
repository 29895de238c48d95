"""Seal (encode + digest + sign) and open (decode + verify) a 40 MB float32 delta.

Reference, measured in the same run: ``msgpack.packb`` of the raw bytes plus ``hashlib.blake2b`` of them, the
least any signed msgpack format must do. Target: both directions >= 50% of the reference throughput and at
most
two copies of the payload alive at once (peak traced allocation / payload size, the input excluded).

Second table: the per-message cost of opening a small signed delta (10 KB, the default scenario's model),
against the crypto floor of the same bytes (one Ed25519 verify plus one BLAKE2b, measured in the same run);
and what a peer spends receiving it (the transport's validator, then the handler: ``GossipEngine``'s
``accept_gossip`` + ``handle_announce``) against one ``open_envelope`` plus one ``decode_tensors`` of it, the
least a receiver must do (the validator checks an inline delta's tensors before it is relayed). Target: ratio
>= 0.8 (the signature is checked and the payload decoded once per message, not once per stage).

    python benchmarks/bench_wire.py [--mb 40] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from p2pfl.identity import Identity
from p2pfl.protocol import GossipEngine, ProtocolConfig
from p2pfl.wire import (
    Header,
    Meta,
    arch_digest,
    decode_tensors,
    model_digest,
    open_envelope,
    payload_parts,
    seal,
)


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def peak_copies(fn: Callable[[], Any], nbytes: int) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    return peak / nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=40.0, help="delta size in MB (float32)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    n = int(args.mb * 1e6 / 4)
    rng = np.random.default_rng(0)
    # a realistic model: a few big layers and some small ones
    sizes = [n // 2, n // 4, n - n // 2 - n // 4 - 1000, 1000]
    delta = {f"layer{i}.weight": rng.standard_normal(s, dtype=np.float32) for i, s in enumerate(sizes)}
    raw = b"".join(a.tobytes() for a in delta.values())
    nbytes = len(raw)
    identity = Identity(bytes(32))
    arch = arch_digest(delta)
    base = model_digest(delta)

    def do_seal() -> bytes:
        return seal_delta(identity, delta, arch=arch, base=base)

    envelope = do_seal()

    def do_open() -> dict[str, Any]:
        env = open_envelope(envelope)
        assert env.payload is not None
        return decode_tensors(env.payload)

    def ref_seal() -> tuple[bytes, bytes]:
        packed = msgpack.packb(raw, use_bin_type=True)
        return packed, hashlib.blake2b(raw, digest_size=32).digest()

    packed_ref = ref_seal()[0]

    def ref_open() -> tuple[Any, bytes]:
        data = msgpack.unpackb(packed_ref)
        return data, hashlib.blake2b(data, digest_size=32).digest()

    decoded = do_open()
    assert all(np.array_equal(delta[k], decoded[k]) for k in delta), "round trip changed the delta"
    del decoded

    t = {
        "seal": best_of(do_seal, args.repeat),
        "open": best_of(do_open, args.repeat),
        "ref_seal": best_of(ref_seal, args.repeat),
        "ref_open": best_of(ref_open, args.repeat),
    }
    copies = {"seal": peak_copies(do_seal, nbytes), "open": peak_copies(do_open, nbytes)}
    gbps = {k: nbytes / v / 1e9 for k, v in t.items()}
    rows = [
        {
            "op": op,
            "seconds": t[op],
            "GB/s": gbps[op],
            "ref GB/s": gbps[f"ref_{op}"],
            "ratio_to_ref": gbps[op] / gbps[f"ref_{op}"],
            "peak_copies": copies[op],
        }
        for op in ("seal", "open")
    ]
    small = small_message(identity, args.repeat)
    if args.json:
        out = {"payload_bytes": nbytes, "envelope_bytes": len(envelope), "rows": rows, "small": small}
        print(json.dumps(out, indent=2))
        return
    print(
        f"payload {nbytes / 1e6:.1f} MB float32 in {len(delta)} tensors;"
        f" envelope {len(envelope) / 1e6:.1f} MB;"
        f" best of {args.repeat}"
    )
    print(f"{'op':6} {'seconds':>8} {'GB/s':>7} {'ref GB/s':>9} {'ratio':>6} {'peak copies':>12}")
    for r in rows:
        print(
            f"{r['op']:6} {r['seconds']:8.4f} {r['GB/s']:7.2f} {r['ref GB/s']:9.2f} {r['ratio_to_ref']:6.2f}"
            f" {r['peak_copies']:12.2f}"
        )
    print("target: ratio >= 0.50 and peak copies <= 2.0")
    print(
        f"\nopen one {small['envelope_bytes'] / 1e3:.0f} KB envelope: {small['us']:.0f} us;"
        f" crypto floor (Ed25519 verify + BLAKE2b) {small['ref_us']:.0f} us;"
        f" ratio {small['ratio_to_ref']:.2f}"
    )
    print(
        f"receive it (validator + handler): {small['receive_us']:.0f} us; one open_envelope + decode_tensors"
        f" {small['open_decode_us']:.0f} us; ratio {small['receive_ratio']:.2f} (target >= 0.8)"
    )


def seal_delta(identity: Identity, delta: dict[str, Any], *, arch: bytes, base: bytes) -> bytes:
    """What a peer does to publish ``delta``: encode and digest the payload, sign a header naming it."""
    parts, pdigest, psize = payload_parts(delta)
    header = Header(
        kind="delta",
        network_id="bench",
        sender=identity.peer_id,
        seq=1,
        base=base,
        result=base,
        arch=arch,
        payload_digest=pdigest,
        payload_size=psize,
        meta=Meta(samples=1),
        timestamp_ms=0,
    )
    return seal(identity, header, parts)


def small_message(identity: Identity, repeat: int, n: int = 2410, per_call: int = 200) -> dict[str, float]:
    """Per-message open cost of a small inline delta (the default scenario's MLP: 2,410 float32) against the
    crypto floor of the same bytes."""
    import nacl.signing

    delta = {"w": np.random.default_rng(1).standard_normal(n, dtype=np.float32)}
    envelope = seal_delta(identity, delta, arch=arch_digest(delta), base=model_digest(delta))
    key = nacl.signing.VerifyKey(identity.public_key)
    key_sig = nacl.signing.SigningKey(identity.seed).sign(b"x" * 300)  # a header-sized signed message

    def ours() -> None:
        for _ in range(per_call):
            open_envelope(envelope)

    def opened_and_decoded() -> None:
        for _ in range(per_call):
            env = open_envelope(envelope)
            assert env.payload is not None
            decode_tensors(env.payload)

    def floor() -> None:
        for _ in range(per_call):
            key.verify(key_sig)
            hashlib.blake2b(envelope, digest_size=32).digest()

    engine = GossipEngine(Identity(bytes([7]) * 32), ProtocolConfig(network_id="bench"), delta)

    def receive() -> None:
        for _ in range(per_call):
            if engine.accept_gossip(envelope):
                engine.handle_announce(envelope, identity.peer_id, 0.0)

    us, ref_us, receive_us, decoded_us = (
        best_of(fn, repeat) / per_call * 1e6 for fn in (ours, floor, receive, opened_and_decoded)
    )
    return {
        "envelope_bytes": len(envelope),
        "us": us,
        "ref_us": ref_us,
        "ratio_to_ref": ref_us / us,
        "receive_us": receive_us,
        "open_decode_us": decoded_us,
        "receive_ratio": decoded_us / receive_us,
    }


if __name__ == "__main__":
    main()
