"""Structure-aware fuzzing of every decoder of remote bytes: envelopes, headers, payloads, peer records.

Shared by ``tests/wire/test_fuzz.py`` (a fixed-seed slice) and ``benchmarks/bench_fuzz.py`` (the 1M run).
Inputs start from valid sealed envelopes, payloads and records signed by real identities, then are mutated:

* byte level (not re-signed): bit flips, interesting bytes, truncation, extension, insertion, deletion,
  splices between seeds, huge declared lengths, swapped envelope elements. A signed input (envelope,
  record) that is still accepted must mean exactly what its seed meant.
* structure level (re-encoded, re-digested and re-signed with the real key, so the checks after the
  signature are reached): extra, unknown and bin-typed keys, swapped fields, wrong types, non-shortest
  integers and lengths, pathological shapes and dtypes, non-finite values, deep nesting, duplicate or
  unsorted tensors. Such an input may be accepted only if it is the canonical encoding of what it says.

Every input is classified: ``accepted``, ``rejected:<reason slug>``, or a bug: ``WRONGLY_ACCEPTED`` (accepted
but not the canonical encoding of what was decoded, or a signed mutant accepted with another meaning) and
``ESCAPED:<exception type>`` (an exception outside the error taxonomy).
"""

from __future__ import annotations

import random
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from p2pfl.discovery import PeerRecord, RecordError, _body_bytes
from p2pfl.errors import P2PFLError
from p2pfl.identity import Identity
from p2pfl.wire import (
    ZERO_DIGEST,
    Header,
    Meta,
    WireError,
    apply_codec,
    arch_digest,
    decode_header,
    decode_tensors,
    digest,
    encode_header,
    encode_tensors,
    model_digest,
    open_envelope,
    seal,
    signed_bytes,
    undo_codec,
)
from tests.strategies import loose_pack

NETWORK = "fuzznet"
ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(1, 33)))
MALLORY = Identity(bytes(range(2, 34)))  # a valid identity, not on the access list
ALLOWED = frozenset({ALICE.peer_id, BOB.peer_id})
TARGETS = ("envelope", "payload", "header", "record")
BUG_PREFIXES = ("WRONGLY_ACCEPTED", "ESCAPED")

#: The receiver's model: what ``undo_codec`` converts to.
MODEL = {
    "a": np.linspace(-1, 1, 5, dtype=np.float32),
    "b": np.arange(4, dtype=np.float32).reshape(2, 2),
    "c": np.zeros((), np.float32),
}


@dataclass(frozen=True)
class Case:
    """One fuzz input. ``keep``: for a signed input mutated byte-wise, the meanings an acceptance may have:
    those of the genuine signed seeds (a splice of two seeds can rebuild another genuine message)."""

    target: str
    mutation: str
    data: bytes
    keep: frozenset[Any] | None = None


@dataclass
class Report:
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_mutation: Counter[tuple[str, str]] = field(default_factory=Counter)
    bugs: list[tuple[Case, str, str]] = field(default_factory=list)
    n: int = 0

    @property
    def bug_count(self) -> int:
        return sum(v for (_, label), v in self.counts.items() if label.startswith(BUG_PREFIXES))


# ------------------------------------------------------------------------------------------- decoding


def _frame(header_bytes: bytes, signature: bytes, payload: bytes | None) -> bytes:
    return (
        b"\x94\x01" + pack(header_bytes) + pack(signature) + (b"\xc0" if payload is None else pack(payload))
    )


def _open_envelope(data: bytes) -> tuple[Any, bool]:
    """(meaning, canonical) of an accepted envelope, its payload decoded and converted like a peer does."""
    env = open_envelope(data, network_id=NETWORK, allowed=ALLOWED.__contains__)
    payload = None if env.payload is None else bytes(env.payload)
    canonical = encode_header(env.header) == env.header_bytes
    if payload is not None:
        tensors = decode_tensors(payload)
        undo_codec(tensors, env.header.codec, MODEL)
        canonical = canonical and encode_tensors(tensors) == payload
    canonical = canonical and _frame(env.header_bytes, env.signature, payload) == data
    return (env.header, payload), canonical


def _open_payload(data: bytes) -> tuple[Any, bool]:
    tensors = decode_tensors(data)
    meaning = tuple((n, a.dtype.str, a.shape, a.tobytes()) for n, a in tensors.items())
    return meaning, encode_tensors(tensors) == data


def _open_header(data: bytes) -> tuple[Any, bool]:
    header = decode_header(data)
    return header, encode_header(header) == data


def _open_record(data: bytes) -> tuple[Any, bool]:
    rec = PeerRecord.decode(data, network_id=NETWORK)
    body = _body_bytes(rec.network_id, rec.peer_id, rec.addrs, rec.seq, rec.ttl)
    meaning = (rec.network_id, rec.peer_id, rec.addrs, rec.seq, rec.ttl)
    return meaning, pack([1, body, rec.signature]) == data


DECODERS: dict[str, Callable[[bytes], tuple[Any, bool]]] = {
    "envelope": _open_envelope,
    "payload": _open_payload,
    "header": _open_header,
    "record": _open_record,
}


def classify(case: Case) -> tuple[str, str | None]:
    """(label, traceback of a bug or None)."""
    try:
        meaning, canonical = DECODERS[case.target](case.data)
    except (WireError, RecordError) as exc:
        return f"rejected:{exc.reason}", None
    except P2PFLError as exc:  # in the taxonomy but without a wire reason: still a bug in a decoder
        return f"ESCAPED:{type(exc).__name__}", traceback.format_exc()
    except Exception as exc:
        return f"ESCAPED:{type(exc).__name__}", traceback.format_exc()
    if not canonical:
        return (
            "WRONGLY_ACCEPTED",
            "accepted, but the input is not the canonical encoding of what it decoded to",
        )
    if case.keep is not None and meaning not in case.keep:
        return (
            "WRONGLY_ACCEPTED",
            f"a byte-level mutant of a signed input was accepted with another meaning: {meaning!r}",
        )
    return "accepted", None


# ---------------------------------------------------------------------------------------------- seeds


@dataclass(frozen=True)
class _EnvSeed:
    identity: Identity
    header: dict[str, Any]
    entries: list[Any]  # the payload's entries
    payload: bytes | None  # the payload as carried inline, or None for a header-only announcement
    data: bytes
    meaning: Any


def _payload_entries(tensors: dict[str, np.ndarray]) -> list[Any]:
    return msgpack.unpackb(encode_tensors(tensors), raw=False)  # type: ignore[no-any-return]


def _make_env_seed(identity: Identity, kind: str, codec: str, inline: bool, seq: int = 3) -> _EnvSeed:
    delta = {k: (v * 0.5 + 0.25).astype(v.dtype) for k, v in MODEL.items()}
    wire_tensors = apply_codec(delta if kind == "delta" else MODEL, codec)
    payload = encode_tensors(wire_tensors)
    header = Header(
        kind=kind,
        network_id=NETWORK,
        sender=identity.peer_id,
        seq=seq,
        base=model_digest(MODEL) if kind == "delta" else ZERO_DIGEST,
        result=model_digest({k: MODEL[k] + delta[k] for k in MODEL})
        if kind == "delta"
        else model_digest(MODEL),
        arch=arch_digest(MODEL),
        payload_digest=digest(payload),
        payload_size=len(payload),
        codec=codec,
        meta=Meta(samples=32, loss=0.375, round=seq),
        timestamp_ms=1_764_806_400_000,
    )
    data = seal(identity, header, payload if inline else None)
    env = open_envelope(data)
    meaning = (env.header, payload if inline else None)
    return _EnvSeed(
        identity, header.to_wire(), _payload_entries(wire_tensors), payload if inline else None, data, meaning
    )


def _seeds() -> tuple[list[_EnvSeed], list[bytes], list[Any], list[tuple[Identity, PeerRecord]]]:
    envs = [
        _make_env_seed(ALICE, "delta", "raw", True),
        _make_env_seed(ALICE, "delta", "raw", False),
        _make_env_seed(BOB, "snapshot", "raw", True, seq=7),
        _make_env_seed(BOB, "delta", "fp16", True),
        _make_env_seed(MALLORY, "delta", "raw", True),
    ]
    payloads = [
        {"a": np.arange(5, dtype=np.float32), "b": np.ones((2, 2), np.int8)},
        {"s": np.array(2.5, np.float64), "z": np.zeros((0, 3), np.int64)},
        {"h": np.array([1.0, -2.0, 0.5], np.float16), "u": np.arange(300, dtype=np.uint8).reshape(3, 100)},
        {"\u00e9l\u00e8ve": np.arange(12, dtype=np.int32).reshape(2, 3, 2), "w" * 40: np.ones(1, np.int16)},
    ]
    records = [
        (
            ALICE,
            PeerRecord.create(ALICE, NETWORK, ["/ip4/127.0.0.1/tcp/4101"], seq=1_764_806_400_000, ttl=300),
        ),
        (
            BOB,
            PeerRecord.create(
                BOB, NETWORK, ["/ip6/::1/tcp/4102", "/dns/peer.example/tcp/4103"], seq=5, ttl=60
            ),
        ),
    ]
    return envs, [encode_tensors(p) for p in payloads], [_payload_entries(p) for p in payloads], records


# ------------------------------------------------------------------------------------------ mutations

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0x90, 0x94, 0xA0, 0xC0, 0xC1, 0xC2, 0xC4, 0xC6, 0xCB, 0xCF, 0xD3,
                     0xD9, 0xDC, 0xDD, 0xDE, 0xDF, 0xFF)  # fmt: skip
#: Values that are wrong somewhere: every msgpack type, boundaries, non-finite floats, big and nested things.
PALETTE: tuple[Any, ...] = (
    *(None, True, False, 0, 1, -1, 127, 128, 255, 2**32, 2**63, 2**64 - 1, -(2**63)),
    *(0.5, float("nan"), float("inf"), -0.0, 1e308, "", "x", "x" * 300, "\u00e9"),
    *(b"", b"\x00" * 32, b"\x00" * 31, b"\x00" * 65, [], [1], [[[]]], {}, {"a": 1}, {b"a": 1}),
    *("delta", "snapshot", "raw", "fp16", NETWORK, ALICE.peer_id, MALLORY.peer_id),
)
SHAPES: tuple[Any, ...] = (
    *([0, 2**63], [0, 2**62], [0, 2**61, 4], [2**64 - 1], [2**64 - 1, 0], [0] * 9, [1] * 9, [-1], [0, -1]),
    *([2**31], [2**31 + 1, 0], [1.0], ["1"], [True], [None], [[2]], 5, "5", None, {}, [], [0]),
    *([3, 0, 2**40], [2**20, 2**20]),
)
DTYPE_NAMES: tuple[Any, ...] = ("float128", "object", "<f4", "f4", "complex64", "bool", "str", "", "float32 ",
    "FLOAT32", "int64", "uint64", "float16", b"float32", 3, None, ["float32"])  # fmt: skip


def _rand_bytes(rng: random.Random, n: int) -> bytes:
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


_DEEP = b"\xee-deep-nesting-placeholder-\xee"


def _nested(depth: int) -> bytes:
    """A placeholder that :func:`pack` turns into ``depth`` nested 1-element arrays (msgpack's packer
    refuses to nest that deep itself)."""
    return _DEEP + depth.to_bytes(4, "big")


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    while _DEEP in data:
        at = data.index(_DEEP)
        depth = int.from_bytes(data[at + len(_DEEP) : at + len(_DEEP) + 4], "big")
        data = (
            data[: at - 2] + b"\x91" * depth + b"\x00" + data[at + len(_DEEP) + 4 :]
        )  # drop the bin8 prefix
    return data


def _widening(rng: random.Random) -> Callable[[], int]:
    p = rng.choice((0.05, 0.2, 0.5))
    return lambda: rng.choice((1, 2, 3)) if rng.random() < p else 0


def byte_mutation(rng: random.Random, data: bytes, others: list[bytes]) -> tuple[str, bytes]:
    """A byte-level mutation of ``data``: (name, mutated bytes)."""
    buf = bytearray(data)
    op = rng.randrange(10)
    pos = rng.randrange(len(buf) + 1)
    at = min(pos, len(buf) - 1)
    if op == 0 and buf:
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        return "bitflip", bytes(buf)
    if op == 1 and buf:
        buf[at] = rng.choice(INTERESTING_BYTES)
        return "set_byte", bytes(buf)
    if op == 2:
        return "truncate", bytes(buf[: rng.randrange(len(buf) + 1)])
    if op == 3:
        return "extend", bytes(buf) + _rand_bytes(rng, rng.randint(1, 16))
    if op == 4:
        buf[pos:pos] = _rand_bytes(rng, rng.randint(1, 8))
        return "insert", bytes(buf)
    if op == 5 and buf:
        del buf[pos : pos + rng.randint(1, 16)]
        return "delete", bytes(buf)
    if op == 6:
        other = rng.choice(others)
        return "splice", bytes(buf[:pos]) + other[rng.randrange(len(other) + 1) :]
    if op == 7:
        # a huge declared length: the next length-carrying type byte claims up to 4 GiB
        starts = [
            i for i, b in enumerate(buf) if b in (0xC4, 0xC5, 0xC6, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF)
        ]
        if starts:
            i = rng.choice(starts)
            tag = {0xC4: 0xC6, 0xC5: 0xC6, 0xC6: 0xC6, 0xD9: 0xDB, 0xDA: 0xDB, 0xDB: 0xDB}.get(
                buf[i], buf[i] | 1
            )
            width = 4
            buf[i : i + 1] = bytes([tag]) + rng.choice((0xFFFFFFFF, 0x7FFFFFFF, 0x10000, len(buf))).to_bytes(
                width, "big"
            )
            return "huge_length", bytes(buf)
    if op == 8 and buf:
        i, j = sorted(rng.randrange(len(buf)) for _ in range(2))
        k = rng.randint(1, 8)
        buf[i : i + k], buf[j : j + k] = buf[j : j + k], buf[i : i + k]
        return "swap_bytes", bytes(buf)
    return "repeat", bytes(buf) + bytes(buf[pos:])


class Generator:
    """Deterministic stream of fuzz cases from one integer seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.envs, self.payloads, self.payload_entries, self.records = _seeds()
        self.env_meanings = frozenset(e.meaning for e in self.envs)
        self.record_meanings = frozenset(
            (r.network_id, r.peer_id, r.addrs, r.seq, r.ttl) for _, r in self.records
        )
        self.others = [e.data for e in self.envs] + self.payloads + [r.encoded for _, r in self.records]

    def __iter__(self) -> Iterator[Case]:
        makers = (
            (self.envelope_bytes, 30),
            (self.envelope_header, 20),
            (self.envelope_payload, 15),
            (self.payload, 12),
            (self.header, 8),
            (self.record, 15),
        )
        funcs = [f for f, _ in makers]
        weights = [w for _, w in makers]
        while True:
            yield self.rng.choices(funcs, weights)[0]()

    # ------------------------------------------------------------------ envelopes

    def envelope_bytes(self) -> Case:
        rng = self.rng
        seed = rng.choice(self.envs)
        if rng.random() < 0.02:
            return Case("envelope", "unchanged", seed.data, self.env_meanings)
        if rng.random() < 0.1:
            # swap or reorder the envelope's elements, keeping each one's bytes
            env = msgpack.unpackb(seed.data, raw=False)
            order = [0, 1, 2, 3]
            rng.shuffle(order)
            items = [env[i] for i in order] if rng.random() < 0.5 else [*env, env[rng.randrange(4)]]
            return Case("envelope", "swap_fields", pack(items), self.env_meanings)
        name, data = byte_mutation(rng, seed.data, self.others)
        return Case("envelope", name, data, self.env_meanings)

    def _resealed(self, seed: _EnvSeed, header_bytes: bytes, payload: bytes | None) -> bytes:
        return _frame(header_bytes, seed.identity.sign(signed_bytes(header_bytes)), payload)

    def _header_mutant(self, h: dict[str, Any]) -> tuple[str, bytes]:
        rng = self.rng
        h = dict(h)
        keys = list(h)
        op = rng.randrange(11)
        if op == 0:
            h[rng.choice(("zzz", "", "Arch", "a", "meta2", "x" * 40))] = rng.choice(PALETTE)
            return "hdr_extra_key", pack(h)
        if op == 1:
            k = rng.choice(keys)
            if rng.random() < 0.5:
                h[k.encode()] = h.pop(k)
            else:
                h[rng.choice((b"arch", b"zzz", b"\xff"))] = rng.choice(PALETTE)
            if rng.random() < 0.5:  # next to an unknown str key: the mix that once broke sorting
                h[rng.choice(("zzz", "Arch", "\u00e9"))] = rng.choice(PALETTE)
            return "hdr_bin_key", pack(h)
        if op == 2:
            return "hdr_non_shortest", loose_pack(h, _widening(rng))
        if op == 3:
            a, b = rng.sample(keys, 2)
            h[a], h[b] = h[b], h[a]
            return "hdr_swap_values", pack(h)
        if op == 4:
            h[rng.choice(keys)] = rng.choice(PALETTE)
            return "hdr_wrong_value", pack(h)
        if op == 5:
            del h[rng.choice(keys)]
            return "hdr_drop_key", pack(h)
        if op == 6:
            rng.shuffle(keys)
            return "hdr_key_order", pack({k: h[k] for k in keys})
        if op == 7:
            meta = dict(h["meta"])
            meta[rng.choice(("loss", "round", "samples", "lr", b"loss"))] = rng.choice(PALETTE)
            h["meta"] = dict(sorted(meta.items(), key=lambda kv: str(kv[0])))
            return "hdr_meta", pack(h)
        if op == 8:
            field_name, values = rng.choice(
                (
                    ("kind", ("delta", "snapshot", "Delta", "", "snap")),
                    ("codec", ("raw", "fp16", "fp8", "RAW")),
                    ("net", (NETWORK, "other", "bad net", "x" * 65, "\u00e9")),
                    ("sender", (ALICE.peer_id, BOB.peer_id, MALLORY.peer_id, "12D3KooW" + "x" * 44,
                                "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "1" + ALICE.peer_id)),
                    ("seq", (0, 1, 2**64 - 1)),
                    ("base", (ZERO_DIGEST, b"\x01" * 32)),
                    ("payload_size", (0, 1, 2**64 - 1)),
                )
            )  # fmt: skip
            h[field_name] = rng.choice(values)
            return "hdr_plausible_value", pack(h)
        if op == 9:
            h[rng.choice(keys)] = _nested(rng.choice((2, 20, 200, 2000)))
            return "hdr_deep_nesting", pack(h)
        return "hdr_float32_loss", msgpack.packb(h, use_bin_type=True, use_single_float=True)

    def envelope_header(self) -> Case:
        seed = self.rng.choice(self.envs)
        name, header_bytes = self._header_mutant(seed.header)
        return Case("envelope", name, self._resealed(seed, header_bytes, seed.payload))

    def _payload_mutant(self, entries: list[Any]) -> tuple[str, bytes]:
        rng = self.rng
        entries = [list(e) for e in entries]
        i = rng.randrange(len(entries))
        e = entries[i]
        op = rng.randrange(12)
        if op == 0:
            return "pl_non_shortest", loose_pack(entries, _widening(rng))
        if op == 1:
            e[2] = rng.choice(SHAPES)
            if rng.random() < 0.5:
                e[3] = b""
            return "pl_shape", pack(entries)
        if op == 2:
            e[2] = [rng.choice((0, 1, 2, 3, 255, 2**16, 2**32, 2**63)) for _ in range(rng.randint(0, 10))]
            e[3] = _rand_bytes(rng, rng.choice((0, 1, 4, 8, 64)))
            return "pl_random_shape", pack(entries)
        if op == 3:
            e[1] = rng.choice(DTYPE_NAMES)
            return "pl_dtype", pack(entries)
        if op == 4 and e[1].startswith("float") and e[3]:
            width = {"float16": 2, "float32": 4, "float64": 8}[e[1]]
            value = np.array([rng.choice((np.nan, np.inf, -np.inf))], dtype=f"<f{width}").tobytes()
            k = rng.randrange(len(e[3]) // width) * width
            e[3] = e[3][:k] + value + e[3][k + width :]
            return "pl_non_finite", pack(entries)
        if op == 5:
            entries.insert(rng.randrange(len(entries) + 1), list(rng.choice(entries)))
            return "pl_duplicate", pack(entries)
        if op == 6 and len(entries) > 1:
            entries.reverse()
            return "pl_unsorted", pack(entries)
        if op == 7:
            if rng.random() < 0.5:
                e.insert(rng.randrange(5), rng.choice(PALETTE))
            else:
                e.pop(rng.randrange(4))
            return "pl_entry_arity", pack(entries)
        if op == 8:
            e[rng.randrange(4)] = rng.choice(PALETTE)
            return "pl_wrong_value", pack(entries)
        if op == 9:
            e[rng.randrange(4)] = _nested(rng.choice((2, 50, 500, 5000)))
            return "pl_deep_nesting", pack(entries)
        if op == 10:
            cut = rng.randint(-8, 8) or 1
            e[3] = e[3][:cut] if cut < 0 else e[3] + _rand_bytes(rng, cut)
            return "pl_data_length", pack(entries)
        e[0] = rng.choice(("", "x" * 257, "a", "\x00", "\u00e9" * 200, b"a", 7))
        return "pl_name", pack(entries)

    def envelope_payload(self) -> Case:
        seed = self.rng.choice([s for s in self.envs if s.payload is not None])
        name, payload = self._payload_mutant(seed.entries)
        h = dict(seed.header, payload_digest=digest(payload), payload_size=len(payload))
        return Case("envelope", name, self._resealed(seed, pack(h), payload))

    # ------------------------------------------------------------------ payloads and headers alone

    def payload(self) -> Case:
        rng = self.rng
        k = rng.randrange(len(self.payloads))
        if rng.random() < 0.4:
            name, data = byte_mutation(rng, self.payloads[k], self.others)
        elif rng.random() < 0.02:
            n = rng.choice((4096, 4097))
            data = (
                b"\xdd"
                + n.to_bytes(4, "big")
                + b"".join(pack([f"t{j:05d}", "int8", [1], b"\x00"]) for j in range(n))
            )
            name = "pl_many_tensors"
        else:
            name, data = self._payload_mutant(self.payload_entries[k])
        return Case("payload", name, data)

    def header(self) -> Case:
        seed = self.rng.choice(self.envs)
        if self.rng.random() < 0.4:
            name, data = byte_mutation(self.rng, encode_header_dict(seed.header), self.others)
        else:
            name, data = self._header_mutant(seed.header)
        return Case("header", name, data)

    # ------------------------------------------------------------------ peer records

    def record(self) -> Case:
        rng = self.rng
        identity, rec = rng.choice(self.records)
        if rng.random() < 0.5:
            name, data = byte_mutation(rng, rec.encoded, self.others)
            return Case("record", name, data, self.record_meanings)
        body = {
            "addrs": list(rec.addrs),
            "net": rec.network_id,
            "peer": rec.peer_id,
            "seq": rec.seq,
            "ttl": rec.ttl,
        }
        op = rng.randrange(8)
        if op == 0:
            body[rng.choice(("zzz", "", b"addrs", b"x"))] = rng.choice(PALETTE)
            name, body_bytes = "rec_extra_key", pack(body)
        elif op == 1:
            k = rng.choice(list(body))
            body[k.encode()] = body.pop(k)
            name, body_bytes = "rec_bin_key", pack(body)
        elif op == 2:
            name, body_bytes = "rec_non_shortest", loose_pack(body, _widening(rng))
        elif op == 3:
            body[rng.choice(list(body))] = rng.choice(PALETTE)
            name, body_bytes = "rec_wrong_value", pack(body)
        elif op == 4:
            body["addrs"] = rng.choice(
                (
                    [],
                    ["/ip4/127.0.0.1/tcp/1"] * 2,
                    [f"/ip4/10.0.0.{j}/tcp/1/p2p/{rec.peer_id}" for j in range(9)],
                    ["/ip4/0.0.0.0/tcp/1"],
                    ["/ip4/127.0.0.01/tcp/1"],
                    ["/dns/" + "a" * 300 + "/tcp/1"],
                    ["/ip6/fe80::1%eth0/tcp/1/p2p/" + rec.peer_id],
                    [f"/ip4/127.0.0.1/tcp/1/p2p/{MALLORY.peer_id}"],
                    [f"memory/{rec.peer_id}"],
                    ["/ip4/127.0.0.1/tcp/99999"],
                    [[]],
                    [b"/ip4/127.0.0.1/tcp/1"],
                )
            )
            name, body_bytes = "rec_addrs", pack(body)
        elif op == 5:
            a, b = rng.sample(list(body), 2)
            body[a], body[b] = body[b], body[a]
            name, body_bytes = "rec_swap_values", pack(body)
        elif op == 6:
            # the outer array re-encoded loosely: the signature still covers the body
            outer = [1, _body_bytes(rec.network_id, rec.peer_id, rec.addrs, rec.seq, rec.ttl), rec.signature]
            return Case(
                "record", "rec_outer_non_shortest", loose_pack(outer, _widening(rng)), self.record_meanings
            )
        else:
            body[rng.choice(list(body))] = _nested(rng.choice((2, 200, 2000)))
            name, body_bytes = "rec_deep_nesting", pack(body)
        signature = identity.sign(b"p2pfl/peer-record/v1\x00" + body_bytes)
        return Case("record", name, pack([1, body_bytes, signature]))


def encode_header_dict(h: dict[str, Any]) -> bytes:
    return pack(h)


def run(count: int, seed: int, *, max_bugs: int = 5, progress: Callable[[int], None] | None = None) -> Report:
    """Generate and classify ``count`` inputs."""
    report = Report()
    for case in Generator(seed):
        if report.n >= count:
            break
        label, detail = classify(case)
        report.counts[(case.target, label)] += 1
        report.by_mutation[(case.mutation, label)] += 1
        if detail is not None and len(report.bugs) < max_bugs:
            report.bugs.append((case, label, detail))
        report.n += 1
        if progress is not None and report.n % 10_000 == 0:
            progress(report.n)
    return report
