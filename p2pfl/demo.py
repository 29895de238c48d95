"""``p2pfl demo``: two identities exchange one signed model delta, and forgeries are rejected.

A tour of the foundation in a few lines of output: keys, a delta sealed against a base model, the receiver
checking signature, digest, base and resulting model, then a tampered and a forged copy being refused.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from p2pfl.identity import Identity, load_key, save_key
from p2pfl.wire import (
    Header,
    Meta,
    WireError,
    arch_digest,
    decode_tensors,
    model_digest,
    open_envelope,
    payload_parts,
    seal,
)

NETWORK = "demo"
Model = dict[str, npt.NDArray[np.float32]]


def _initial_model(seed: int) -> Model:
    rng = np.random.default_rng(seed)
    return {
        "layer0.weight": (rng.standard_normal((16, 8)) * 0.1).astype(np.float32),
        "layer0.bias": np.zeros(16, np.float32),
    }


def _local_step(model: Model, seed: int) -> Model:
    """One gradient step of least squares on private synthetic data; returns the delta."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.standard_normal((64, 16)).astype(np.float32)
    err = x @ model["layer0.weight"].T + model["layer0.bias"] - y
    lr = np.float32(0.05)
    return {
        "layer0.weight": (-lr * (err.T @ x) / len(x)).astype(np.float32),
        "layer0.bias": (-lr * err.mean(axis=0)).astype(np.float32),
    }


def run_demo(out: Path | None) -> int:
    with tempfile.TemporaryDirectory(prefix="p2pfl-demo-") as tmp:
        directory = out or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        alice_key, bob_key = directory / "alice.key", directory / "bob.key"
        for key in (alice_key, bob_key):
            if not key.exists():
                save_key(Identity.generate(), key)
        alice, bob = load_key(alice_key), load_key(bob_key)
        print(f"alice  {alice.peer_id}\nbob    {bob.peer_id}")

        shared_start = _initial_model(seed=7)  # both peers start from the same public model
        delta = _local_step(shared_start, seed=1)  # alice trains on data bob never sees
        alice_public = {k: shared_start[k] + delta[k] for k in shared_start}
        parts, pdigest, psize = payload_parts(delta)
        header = Header(
            kind="delta",
            network_id=NETWORK,
            sender=alice.peer_id,
            seq=1,
            base=model_digest(shared_start),
            result=model_digest(alice_public),
            arch=arch_digest(shared_start),
            payload_digest=pdigest,
            payload_size=psize,
            meta=Meta(samples=64, loss=0.5, round=1),
            timestamp_ms=int(time.time() * 1000),
        )
        envelope = seal(alice, header, parts)
        env_file = directory / "alice-delta-1.env"
        env_file.write_bytes(envelope)
        print(f"alice sealed delta seq=1: {len(envelope)} bytes -> {env_file}")

        # bob keeps a replica of alice's public model and applies her delta only if everything checks out
        replica = dict(shared_start)
        env = open_envelope(envelope, network_id=NETWORK)
        assert env.payload is not None
        if env.header.base != model_digest(replica):
            print("bob: base digest does not match my replica: would request a snapshot")
            return 1
        received = decode_tensors(env.payload)
        replica = {k: replica[k] + received[k] for k in replica}
        ok = model_digest(replica) == env.header.result
        print(
            f"bob verified signature and payload digest from {env.header.sender[:16]}...; "
            f"replica digest matches alice's result: {ok}"
        )

        tampered = bytearray(envelope)
        tampered[-5] ^= 0x01
        # bob signs a header claiming to be alice's: the signature cannot verify under alice's key
        forged = seal(bob, replace(header, sender=bob.peer_id), parts)
        forged_as_alice = forged.replace(bob.peer_id.encode(), alice.peer_id.encode())
        for label, data in (("tampered payload", bytes(tampered)), ("forged sender", bytes(forged_as_alice))):
            try:
                open_envelope(data, network_id=NETWORK)
                print(f"bob accepted the {label}: THIS IS A BUG")
                return 1
            except WireError as exc:
                print(f"bob rejected the {label}: {exc.reason}: {exc}")
        print(
            f"inspect it yourself: p2pfl inspect {env_file}"
            if out
            else "run with --out DIR to keep the files"
        )
        return 0 if ok else 1
