"""Hostile bytes: whatever arrives, only WireError may escape the decoder."""

from __future__ import annotations

import random

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pfl.identity import Identity
from p2pfl.wire import Limits, WireError, decode_header, decode_tensors, encode_tensors, open_envelope
from tests.conftest import make_envelope
from tests.fuzzing import run

SMALL = Limits(max_envelope=1 << 20, max_elements=1 << 20)


def decode_all(data: bytes) -> str:
    """Run every decoder on ``data``; return the outcome, raising anything that is not a WireError."""
    outcomes = []
    for decoder in (
        lambda d: open_envelope(d, limits=SMALL),
        lambda d: decode_tensors(d, limits=SMALL),
        lambda d: decode_header(d, SMALL),
    ):
        try:
            result = decoder(data)
        except WireError as exc:
            outcomes.append(exc.reason)
        else:
            outcomes.append("ok" if result is not None else "none")
    return ",".join(outcomes)


def seed_corpus() -> list[bytes]:
    alice = Identity(bytes(range(32)))
    tensors = {"a": np.arange(5, dtype=np.float32), "b": np.ones((2, 2), np.int8)}
    return [
        make_envelope(alice, tensors),
        make_envelope(alice, tensors, inline=False),
        encode_tensors(tensors),
        msgpack.packb({"arch": b"x", "seq": 1}, use_bin_type=True),
    ]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[min(pos, len(buf) - 1)] = rng.choice(
                [0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xC4, 0xC6, 0xCF, 0xDD, 0xDF, 0xFF]
            )
        elif op == 2:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and buf:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 4:
            del buf[pos:]
        else:
            other = rng.choice(seed_corpus())
            cut = rng.randrange(len(other) + 1)
            buf[pos:] = other[cut:]
    return bytes(buf)


def test_ten_thousand_random_and_mutated_inputs_raise_only_wire_errors() -> None:
    rng = random.Random(20261127)
    corpus = seed_corpus()
    reasons: set[str] = set()
    for i in range(12_000):
        if i % 3 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        else:
            data = mutate(rng, rng.choice(corpus))
        reasons.update(decode_all(data).split(","))
    # the corpus reaches deep: signature and digest checks, not just framing
    assert {"bad_signature", "digest_mismatch", "truncated", "malformed"} <= reasons


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_wire_errors(data: bytes) -> None:
    decode_all(data)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text(max_size=8)
        | st.binary(max_size=8),
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_msgpack_values_raise_only_wire_errors(value: object) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    decode_all(data)
    decode_all(b"\x94\x01" + data)


def test_a_fixed_seed_slice_of_the_fuzz_benchmark_finds_no_bug() -> None:
    """25,000 inputs of ``benchmarks/bench_fuzz.py --seed 20261204``: nothing wrongly accepted, nothing
    outside the taxonomy, and the mutants reach every stage (signature, payload, record checks)."""
    report = run(25_000, 20261204, max_bugs=3)
    assert [] == [(case.target, case.mutation, label, detail) for case, label, detail in report.bugs]
    assert 0 == report.bug_count
    reached = {label for _, label in report.counts}
    expected = {
        "accepted",
        "rejected:bad_signature",
        "rejected:sender_not_allowed",
        "rejected:digest_mismatch",
        "rejected:non_canonical",
        "rejected:bad_shape",
        "rejected:oversize",
        "rejected:bad_dtype",
        "rejected:non_finite",
        "rejected:duplicate_name",
        "rejected:peer_mismatch",
        "rejected:wrong_network",
    }
    assert expected <= reached
