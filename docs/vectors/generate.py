"""Write the wire conformance vectors: ``python docs/vectors/generate.py`` (deterministic: fixed seeds).

Each vector is an input (hex), the context a receiver needs, and the exact outcome; the format is described in
``docs/wire-format.md`` section 13. Every vector states the outcome it is meant to have; writing fails if the
reference implementation disagrees, and ``tests/wire/test_vectors.py`` replays the written files against the
code.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from p2pfl.discovery import SIGNING_DOMAIN as RECORD_DOMAIN
from p2pfl.discovery import PeerRecord, RecordError
from p2pfl.identity import Identity
from p2pfl.protocol.freshness import MAX_CLOCK_SKEW_S, MAX_VERSION_AGE_S, timestamp_error
from p2pfl.protocol.ratelimit import Refused
from p2pfl.wire import (
    ZERO_DIGEST,
    DPClaim,
    Header,
    Limits,
    Meta,
    WireError,
    apply_codec,
    arch_digest,
    decode_tensors,
    digest,
    encode_tensors,
    model_digest,
    open_envelope,
    seal,
    signed_bytes,
    undo_codec,
)

HERE = Path(__file__).resolve().parent
FORMAT = "p2pfl-wire-vectors/1"
NETWORK = "vectors"
SEEDS = {"alice": bytes(range(32)), "bob": bytes(range(32, 64)), "mallory": bytes(range(64, 96))}
IDS = {name: Identity(seed) for name, seed in SEEDS.items()}
ALICE, BOB, MALLORY = IDS["alice"], IDS["bob"], IDS["mallory"]
ALLOWED = [ALICE.peer_id, BOB.peer_id]
#: The receiver's model (what a delta applies to and what fp16 tensors are converted back to).
MODEL = {
    "bias": np.array([0.5, -0.25], np.float32),
    "weight": np.arange(6, dtype=np.float32).reshape(2, 3) / 8,
}
DELTA = {"bias": np.array([1.0, -2.0], np.float32), "weight": np.full((2, 3), 0.125, np.float32)}
TS = 1_764_806_400_000  # 2025-12-04T00:00:00Z


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def h32(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


# ------------------------------------------------------------------------------------------- replay


def limits_of(context: dict[str, Any]) -> Limits:
    return Limits(**context.get("limits", {}))


def tensor_view(tensors: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [
        {
            "name": n,
            "dtype": a.dtype.name,
            "shape": list(a.shape),
            "data_blake2b": h32(a.astype(a.dtype.newbyteorder("<")).tobytes()),
        }
        for n, a in tensors.items()
    ]


def replay_envelope(data: bytes, context: dict[str, Any]) -> dict[str, Any]:
    """What a receiver makes of ``data`` in ``context``: the outcome a vector records."""
    allowed = context.get("allowed_senders")
    limits = limits_of(context)
    try:
        env = open_envelope(
            data,
            limits=limits,
            network_id=context.get("network_id"),
            allowed=None if allowed is None else set(allowed).__contains__,
            expected_sender=context.get("expected_sender"),
            before_signature=freshness_gate(context),
        )
        h = env.header
        out: dict[str, Any] = {
            "outcome": "accepted",
            "header": {
                "arch": h.arch.hex(),
                "base": h.base.hex(),
                "codec": h.codec,
                "kind": h.kind,
                "meta": {
                    k: v
                    for k, v in (("loss", h.meta.loss), ("round", h.meta.round), ("samples", h.meta.samples))
                    if v is not None
                },
                "net": h.network_id,
                "payload_digest": h.payload_digest.hex(),
                "payload_size": h.payload_size,
                "result": h.result.hex(),
                "sender": h.sender,
                "seq": h.seq,
                "ts": h.timestamp_ms,
                # the optional differential-privacy claim, only when the header has one
                **({"dp": h.dp.to_wire()} if h.dp is not None else {}),
            },
            "payload": None,
        }
        if env.payload is not None:
            tensors = decode_tensors(env.payload, limits=limits)
            out["payload"] = {"tensors": tensor_view(tensors)}
            model = context.get("model")
            if model is not None:
                like = {t["name"]: np.zeros(t["shape"], t["dtype"]) for t in model}
                out["payload"]["as_model"] = tensor_view(undo_codec(tensors, h.codec, like))
        return out
    except (WireError, Refused) as exc:
        return {"outcome": "rejected", "reason": exc.reason}


def freshness_gate(context: dict[str, Any]) -> Callable[[Header], None] | None:
    """With ``wall_ms`` in the context (the envelope arrived by gossip then), the freshness window of
    protocol.md, checked before the signature: ``stale_timestamp``, ``future_timestamp``."""
    wall = context.get("wall_ms")
    if wall is None:
        return None
    age = context.get("max_version_age_s", MAX_VERSION_AGE_S)
    skew = context.get("max_clock_skew_s", MAX_CLOCK_SKEW_S)

    def gate(h: Header) -> None:
        reason = timestamp_error(h.timestamp_ms, wall, age, skew)
        if reason is not None:
            raise Refused(reason)

    return gate


def replay_payload(data: bytes, context: dict[str, Any]) -> dict[str, Any]:
    try:
        return {
            "outcome": "accepted",
            "tensors": tensor_view(decode_tensors(data, limits=limits_of(context))),
        }
    except WireError as exc:
        return {"outcome": "rejected", "reason": exc.reason}


def replay_record(data: bytes, context: dict[str, Any]) -> dict[str, Any]:
    try:
        rec = PeerRecord.decode(
            data, network_id=context.get("network_id"), peer_id=context.get("expected_peer")
        )
    except RecordError as exc:
        return {"outcome": "rejected", "reason": exc.reason}
    return {
        "outcome": "accepted",
        "record": {
            "net": rec.network_id,
            "peer": rec.peer_id,
            "addrs": list(rec.addrs),
            "seq": rec.seq,
            "ttl": rec.ttl,
        },
    }


REPLAY: dict[str, Callable[[bytes, dict[str, Any]], dict[str, Any]]] = {
    "envelopes": replay_envelope,
    "payloads": replay_payload,
    "records": replay_record,
}


# ------------------------------------------------------------------------------------------ building


def header(identity: Identity = ALICE, payload: bytes | None = None, **changes: Any) -> Header:
    payload = encode_tensors(DELTA) if payload is None else payload
    fields: dict[str, Any] = dict(
        kind="delta",
        network_id=NETWORK,
        sender=identity.peer_id,
        seq=4,
        base=model_digest(MODEL),
        result=model_digest({k: MODEL[k] + DELTA[k] for k in MODEL}),
        arch=arch_digest(MODEL),
        payload_digest=digest(payload),
        payload_size=len(payload),
        codec="raw",
        meta=Meta(samples=48, loss=0.6875, round=4),
        timestamp_ms=TS,
    )
    fields.update(changes)
    return Header(**fields)


def frame(header_bytes: bytes, signature: bytes, payload: bytes | None) -> bytes:
    return (
        b"\x94\x01" + pack(header_bytes) + pack(signature) + (b"\xc0" if payload is None else pack(payload))
    )


def signed(header_map: dict[Any, Any] | bytes, payload: bytes | None, identity: Identity = ALICE) -> bytes:
    """Any header map or bytes in a validly signed envelope, so the checks after the signature run."""
    hb = header_map if isinstance(header_map, bytes) else pack(header_map)
    return frame(hb, identity.sign(signed_bytes(hb)), payload)


def with_payload(payload: bytes, identity: Identity = ALICE) -> bytes:
    """A signed delta whose header describes ``payload`` (digest and size), whatever ``payload`` holds."""
    return seal(identity, header(identity, payload=payload), payload)


def entry(name: str, dtype: str, shape: list[Any], data: bytes) -> list[Any]:
    return [name, dtype, shape, data]


CTX = {"network_id": NETWORK, "allowed_senders": ALLOWED}
MODEL_CTX = [{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)} for n, a in MODEL.items()]


def envelope_vectors() -> list[dict[str, Any]]:
    raw = encode_tensors(DELTA)
    delta = seal(ALICE, header(), raw)
    hm = header().to_wire()
    v: list[dict[str, Any]] = []

    def add(
        name: str, description: str, data: bytes, expect: str, context: dict[str, Any] | None = None
    ) -> None:
        v.append(
            {
                "name": name,
                "description": description,
                "input": data.hex(),
                "context": context or CTX,
                "expect": expect,
            }
        )

    # accepted
    add(
        "delta",
        "a valid raw delta from alice, payload inline",
        delta,
        "accepted",
        {**CTX, "model": MODEL_CTX},
    )
    snap = encode_tensors(MODEL)
    add(
        "snapshot",
        "a valid snapshot from bob (base is the zero digest), fetched from bob",
        seal(
            BOB,
            header(
                BOB,
                payload=snap,
                kind="snapshot",
                seq=9,
                base=ZERO_DIGEST,
                result=model_digest(MODEL),
                meta=Meta(),
            ),
            snap,
        ),
        "accepted",
        {**CTX, "expected_sender": BOB.peer_id, "model": MODEL_CTX},
    )
    add(
        "announcement",
        "a header-only delta announcement (payload nil, fetched by digest)",
        seal(ALICE, header(), None),
        "accepted",
    )
    half = encode_tensors(apply_codec(DELTA, "fp16"))
    add(
        "fp16-delta",
        "codec fp16: float32 tensors travel as float16 and are converted back to the model's float32",
        seal(ALICE, header(payload=half, codec="fp16"), half),
        "accepted",
        {**CTX, "model": MODEL_CTX},
    )
    add(
        "open-network",
        "no access list (allowed_senders null): any valid sender, here mallory",
        seal(MALLORY, header(MALLORY), raw),
        "accepted",
        {"network_id": NETWORK, "allowed_senders": None},
    )

    # outer framing
    add(
        "oversize",
        "the envelope is larger than limits.max_envelope (checked before any decoding)",
        delta,
        "oversize",
        {**CTX, "limits": {"max_envelope": 256}},
    )
    add(
        "oversize-header",
        "the header is larger than limits.max_header",
        delta,
        "oversize",
        {**CTX, "limits": {"max_header": 256}},
    )
    add("malformed-outer", "not a 4-element array (a 3-element one)", b"\x93" + delta[1:], "malformed")
    add("empty", "no bytes at all", b"", "truncated")
    add("truncated", "the envelope ends inside the payload", delta[:-1], "truncated")
    add("trailing-bytes", "one byte after the envelope", delta + b"\x00", "trailing_bytes")
    add("unsupported-version", "version 2", b"\x94\x02" + delta[2:], "unsupported_version")
    add("version-not-fixint", "the version as uint8 (0xcc 0x01)", b"\x94\xcc\x01" + delta[2:], "wrong_type")
    sig = ALICE.sign(signed_bytes(pack(hm)))
    add("signature-nil", "the signature is nil", b"\x94\x01" + pack(pack(hm)) + b"\xc0\xc0", "wrong_type")
    add("signature-short", "a 63-byte signature", frame(pack(hm), sig[:63], None), "wrong_type")
    add(
        "header-str",
        "the header carried as str, not bin",
        b"\x94\x01" + pack("x") + pack(sig) + b"\xc0",
        "wrong_type",
    )
    wide_sig = b"\x94\x01" + pack(pack(hm)) + b"\xc5\x00\x40" + sig + b"\xc0"
    add(
        "non-canonical-bin-length",
        "the signature's length as bin16 instead of bin8",
        wide_sig,
        "non_canonical",
    )

    # header schema
    add(
        "missing-field",
        "the header lacks ts",
        signed({k: x for k, x in hm.items() if k != "ts"}, None),
        "missing_field",
    )
    add("unknown-field", "the header has an extra key zz", signed({**hm, "zz": 1}, None), "unknown_field")
    add(
        "unknown-meta-field",
        "meta has an extra key lr",
        signed({**hm, "meta": {"loss": 0.5, "lr": 1}}, None),
        "unknown_field",
    )
    add("wrong-type-seq", "seq is a str", signed({**hm, "seq": "4"}, None), "wrong_type")
    add("wrong-type-digest", "base is 31 bytes", signed({**hm, "base": bytes(31)}, None), "wrong_type")
    add(
        "wrong-type-bool",
        "seq is true (booleans are not integers)",
        signed({**hm, "seq": True}, None),
        "wrong_type",
    )
    bin_key = dict(hm)
    bin_key[b"arch"] = bin_key.pop("arch")
    add("bin-key", "the key arch is bin, not str", signed(bin_key, None), "wrong_type")
    add("schema-kind", "kind is gradient", signed({**hm, "kind": "gradient"}, None), "schema")
    add("schema-codec", "codec is zip", signed({**hm, "codec": "zip"}, None), "schema")
    add("schema-network-id", "net is 'bad net' (a space)", signed({**hm, "net": "bad net"}, None), "schema")
    add(
        "schema-sender",
        "sender is not an Ed25519 peer id",
        signed({**hm, "sender": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"}, None),
        "schema",
    )
    add("schema-delta-seq-0", "a delta with seq 0", signed({**hm, "seq": 0}, None), "schema")
    add(
        "schema-snapshot-base",
        "a snapshot with a non-zero base",
        signed({**hm, "kind": "snapshot"}, None),
        "schema",
    )
    add(
        "non-finite-loss",
        "meta.loss is NaN",
        signed({**hm, "meta": {"loss": float("nan")}}, None),
        "non_finite",
    )
    add(
        "oversize-str-field",
        "net is a 300-byte str (header strings are capped at 256 bytes)",
        signed({**hm, "net": "n" * 300}, None),
        "oversize",
    )
    add(
        "oversize-bin-field",
        "arch is 65 bytes (header bins are capped at 64)",
        signed({**hm, "arch": bytes(65)}, None),
        "oversize",
    )
    add(
        "non-canonical-key-order",
        "the header's keys in reverse order",
        signed(dict(reversed(hm.items())), None),
        "non_canonical",
    )
    wide_seq = pack(hm).replace(pack("seq") + b"\x04", pack("seq") + b"\xcf" + struct.pack(">Q", 4))
    add(
        "non-canonical-int",
        "seq 4 as uint64 (0xcf) instead of a fixint",
        signed(wide_seq, None),
        "non_canonical",
    )
    add(
        "non-canonical-signed-int",
        "seq 4 as int8 (0xd0)",
        signed(pack(hm).replace(pack("seq") + b"\x04", pack("seq") + b"\xd0\x04"), None),
        "non_canonical",
    )
    add(
        "non-canonical-float32",
        "meta.loss as float32 (0xca)",
        signed(msgpack.packb(hm, use_bin_type=True, use_single_float=True), None),
        "non_canonical",
    )
    add(
        "non-canonical-str8",
        "codec 'raw' as str8 (0xd9 0x03)",
        signed(pack(hm).replace(b"\xa3raw", b"\xd9\x03raw"), None),
        "non_canonical",
    )

    # after the schema
    add(
        "wrong-network",
        "a valid delta of network 'other'",
        seal(ALICE, header(network_id="other"), raw),
        "wrong_network",
    )
    add(
        "sender-not-allowed",
        "a valid delta from mallory, who is not on the access list",
        seal(MALLORY, header(MALLORY), raw),
        "sender_not_allowed",
    )
    add(
        "bad-signature",
        "one bit of the signature flipped",
        delta.replace(sig_of(delta), flip(sig_of(delta))),
        "bad_signature",
    )
    add("signed-by-another", "alice's header signed by bob", signed(pack(hm), None, BOB), "bad_signature")
    add(
        "sender-mismatch",
        "a valid delta from alice where bob was asked",
        delta,
        "sender_mismatch",
        {**CTX, "expected_sender": BOB.peer_id},
    )
    tampered = delta[: -len(raw)] + raw[:-1] + bytes([raw[-1] ^ 1])
    add("digest-mismatch", "the last payload byte changed", tampered, "digest_mismatch")
    add(
        "size-mismatch",
        "payload_size one too large (digest right)",
        signed({**hm, "payload_size": len(raw) + 1}, raw),
        "digest_mismatch",
    )

    # payload (validly signed and digested, so decoding is reached)
    f32 = np.array([1.0, -2.0], np.float32).tobytes()
    add("bad-dtype", "dtype complex64", with_payload(pack([entry("w", "complex64", [2], f32)])), "bad_dtype")
    add(
        "bad-shape-bytes",
        "shape [3] of float32 needs 12 bytes, has 8",
        with_payload(pack([entry("w", "float32", [3], f32)])),
        "bad_shape",
    )
    add(
        "bad-shape-ndim",
        "9 dimensions (limit 8)",
        with_payload(pack([entry("w", "float32", [1] * 9, f32[:4])])),
        "bad_shape",
    )
    add(
        "oversize-zero-extent",
        "shape [0, 2**63]: no element, but the extent exceeds max_elements",
        with_payload(pack([entry("w", "float32", [0, 2**63], b"")])),
        "oversize",
    )
    add(
        "oversize-elements",
        "shape [2**31 + 1] (limit 2**31 elements)",
        with_payload(pack([entry("w", "int8", [2**31 + 1], b"")])),
        "oversize",
    )
    add(
        "non-finite",
        "a NaN in a float32 tensor",
        with_payload(pack([entry("w", "float32", [2], np.array([1, np.nan], np.float32).tobytes())])),
        "non_finite",
    )
    dup = entry("w", "float32", [2], f32)
    add("duplicate-name", "two tensors named w", with_payload(pack([dup, dup])), "duplicate_name")
    add(
        "unsorted-names",
        "tensors b before a",
        with_payload(pack([entry("b", "int8", [1], b"\x00"), entry("a", "int8", [1], b"\x00")])),
        "non_canonical",
    )
    add(
        "non-canonical-payload",
        "a shape dimension as uint8 (0xcc 0x02)",
        with_payload(raw.replace(b"\x91\x02", b"\x91\xcc\x02", 1)),
        "non_canonical",
    )
    add(
        "payload-wrong-type",
        "a tensor entry with 3 fields",
        with_payload(pack([["w", "float32", [2]]])),
        "wrong_type",
    )
    add(
        "payload-trailing",
        "a byte after the payload's array (inside the signed payload)",
        with_payload(raw + b"\x00"),
        "trailing_bytes",
    )
    add("payload-truncated", "the payload ends inside a tensor", with_payload(raw[:-3]), "truncated")

    # precedence: two faults at once
    add(
        "precedence-oversize-over-malformed",
        "too large and not an envelope: oversize",
        b"\x00" * 300,
        "oversize",
        {**CTX, "limits": {"max_envelope": 256}},
    )
    add(
        "precedence-version-over-truncated",
        "version 2 and truncated: the version is read first",
        (b"\x94\x02" + delta[2:])[:40],
        "unsupported_version",
    )
    add(
        "precedence-bin-key-over-unknown",
        "a bin key next to an unknown str key (no valid signature needed)",
        frame(pack({**bin_key, "zz": 1}), bytes(64), None),
        "wrong_type",
    )
    add(
        "precedence-missing-over-unknown",
        "a missing and an unknown field: missing_field",
        signed({**{k: x for k, x in hm.items() if k != "ts"}, "zz": 1}, None),
        "missing_field",
    )
    add(
        "precedence-schema-over-non-canonical",
        "kind gradient and a wide seq: schema",
        signed(wide_seq.replace(b"\xa5delta", b"\xa8gradient"), None),
        "schema",
    )
    add(
        "precedence-non-canonical-over-signature",
        "a wide seq and no valid signature: non_canonical",
        frame(wide_seq, bytes(64), None),
        "non_canonical",
    )
    add(
        "precedence-network-over-signature",
        "network 'other' and a bad signature: wrong_network",
        frame(pack({**hm, "net": "other"}), bytes(64), None),
        "wrong_network",
    )
    add(
        "precedence-not-allowed-over-signature",
        "mallory's header with a bad signature: sender_not_allowed",
        frame(pack(header(MALLORY).to_wire()), bytes(64), None),
        "sender_not_allowed",
    )
    add(
        "precedence-signature-over-expected-sender",
        "a bad signature where bob was asked: bad_signature",
        frame(pack(hm), bytes(64), None),
        "bad_signature",
        {**CTX, "expected_sender": BOB.peer_id},
    )
    add(
        "precedence-digest-over-payload",
        "a tampered payload that is also not msgpack: digest_mismatch",
        delta[: -len(raw)] + b"\xc1" * len(raw),
        "digest_mismatch",
    )
    two = pack([entry("a", "float64", [1], b"\x00" * 8), entry("b", "float32", [5], f32)])
    add(
        "precedence-first-entry-wins",
        "entry a has a bad dtype, entry b a bad shape: the first entry's fault wins",
        with_payload(pack([entry("a", "complex64", [1], b""), entry("b", "float32", [5], f32)])),
        "bad_dtype",
    )
    add(
        "precedence-entry-order",
        "entry a is fine, entry b has a bad shape: bad_shape",
        with_payload(two),
        "bad_shape",
    )
    add(
        "precedence-dtype-over-shape",
        "one entry with a bad dtype and a bad shape: bad_dtype",
        with_payload(pack([entry("w", "complex64", [-1], b"")])),
        "bad_dtype",
    )
    add(
        "precedence-duplicate-over-non-canonical",
        "a duplicate name and a wide dimension: duplicate_name",
        with_payload(pack([dup, dup]).replace(b"\x91\x02", b"\x91\xcc\x02", 1)),
        "duplicate_name",
    )
    nan_wide = pack([entry("w", "float32", [2], np.array([1, np.nan], np.float32).tobytes())]).replace(
        b"\x91\x02", b"\x91\xcc\x02", 1
    )
    add(
        "precedence-non-canonical-over-non-finite",
        "a wide dimension and a NaN: non_canonical (encoding before values)",
        with_payload(nan_wide),
        "non_canonical",
    )
    _dp_vectors(add, raw, hm)
    _freshness_vectors(add, delta)
    return v


def _freshness_vectors(add: Callable[..., None], delta: bytes) -> None:
    """A gossiped delta's timestamp against the receiver's clock (``wall_ms``; protocol.md, Freshness): the
    window's ends included, and where the check stands in the order (after the access list, before the
    signature)."""
    for name, wall, outcome in (
        ("fresh", TS + 1_000, "accepted"),
        ("at-the-age-limit", TS + 300_000, "accepted"),
        ("stale", TS + 300_001, "stale_timestamp"),
        ("at-the-skew-limit", TS - 60_000, "accepted"),
        ("future", TS - 60_001, "future_timestamp"),
    ):
        add(
            f"gossip-{name}",
            f"alice's delta (ts {TS}) gossiped, the receiver's clock at {wall}",
            delta,
            outcome,
            {**CTX, "wall_ms": wall},
        )
    add(
        "gossip-custom-window",
        "a receiver with max_version_age_s 10 and max_clock_skew_s 1: 10.001 s old is stale",
        delta,
        "stale_timestamp",
        {**CTX, "wall_ms": TS + 10_001, "max_version_age_s": 10.0, "max_clock_skew_s": 1.0},
    )
    stale = {**CTX, "wall_ms": TS + 3_600_000}
    add(
        "precedence-stale-over-bad-signature",
        "an hour old and a flipped signature bit: stale_timestamp (checked before the signature)",
        delta.replace(sig_of(delta), flip(sig_of(delta))),
        "stale_timestamp",
        stale,
    )
    add(
        "precedence-not-allowed-over-stale",
        "an hour old, from mallory (not on the access list): sender_not_allowed (checked before)",
        seal(MALLORY, header(MALLORY), encode_tensors(DELTA)),
        "sender_not_allowed",
        stale,
    )


def _dp_vectors(add: Callable[..., None], raw: bytes, hm: dict[str, Any]) -> None:
    """The optional ``dp`` header field (section 3): a valid claim, and each way its map can be wrong."""
    claim = DPClaim(mode="record", epsilon=1.5, delta=1e-5, noise_multiplier=1.1, clip_norm=1.0)
    add(
        "delta-dp",
        "a valid delta whose header carries a differential-privacy claim (dp)",
        seal(ALICE, header(dp=claim, meta=Meta(round=4)), raw),
        "accepted",
    )
    good = claim.to_wire()

    def with_dp(dp: Any) -> bytes:
        return signed(dict(sorted({**hm, "dp": dp}.items())), raw)

    add("dp-missing-field", "dp without sigma", with_dp({k: v for k, v in good.items() if k != "sigma"}),
        "missing_field")  # fmt: skip
    add("dp-unknown-field", "dp with an extra key q", with_dp({**good, "q": 0.1}), "unknown_field")
    add(
        "dp-int-epsilon",
        "dp eps as an integer (floats are float64)",
        with_dp({**good, "eps": 2}),
        "wrong_type",
    )
    add("dp-not-a-map", "dp as a string", with_dp("record"), "wrong_type")
    add("dp-bad-mode", "dp mode neither record nor peer", with_dp({**good, "mode": "user"}), "schema")
    add("dp-bad-delta", "dp delta of 1.0", with_dp({**good, "delta": 1.0}), "schema")
    add("dp-nan-epsilon", "dp eps NaN", with_dp({**good, "eps": float("nan")}), "non_finite")
    wide = pack(dict(sorted({**hm, "dp": good}.items()))).replace(pack(1.1), b"\xca" + struct.pack(">f", 1.1))
    add(
        "dp-float32",
        "dp sigma as float32 (not the shortest float64 form)",
        signed(wide, raw),
        "non_canonical",
    )


def sig_of(envelope: bytes) -> bytes:
    at = envelope.index(b"\xc4\x40", 4 + 2)
    return envelope[at + 2 : at + 66]


def flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


def payload_vectors() -> list[dict[str, Any]]:
    v: list[dict[str, Any]] = []

    def add(
        name: str, description: str, data: bytes, expect: str, limits: dict[str, int] | None = None
    ) -> None:
        v.append(
            {
                "name": name,
                "description": description,
                "input": data.hex(),
                "context": {"limits": limits or {}},
                "expect": expect,
            }
        )

    every = {
        "a.f16": np.array([0.5, -1.5], np.float16),
        "b.f32": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
        "c.f64": np.array(3.25, np.float64),
        "d.i8": np.array([-1, 2], np.int8),
        "e.u8": np.arange(3, dtype=np.uint8),
        "f.i16": np.array([-300], np.int16),
        "g.i32": np.zeros((0, 4), np.int32),
        "h.i64": np.array([2**40], np.int64),
        "\u00e9t\u00e9": np.ones(1, np.float32),
    }
    add(
        "every-dtype",
        "one tensor of each dtype, a scalar, an empty one and a non-ASCII name",
        encode_tensors(every),
        "accepted",
    )
    add("empty", "no tensors", b"\x90", "accepted")
    add(
        "many-tensors",
        "17 tensors (array16 is then the shortest form)",
        encode_tensors({f"t{i:02d}": np.zeros(1, np.int8) for i in range(17)}),
        "accepted",
    )
    add(
        "too-many-tensors",
        "3 tensors with limits.max_tensors = 2",
        encode_tensors({f"t{i}": np.zeros(1, np.int8) for i in range(3)}),
        "oversize",
        {"max_tensors": 2},
    )
    add(
        "name-too-long",
        "a 9-byte name with limits.max_name = 8",
        encode_tensors({"n" * 9: np.zeros(1, np.int8)}),
        "oversize",
        {"max_name": 8},
    )
    add(
        "too-many-dims",
        "3 dimensions with limits.max_ndim = 2",
        encode_tensors({"w": np.zeros((1, 1, 1), np.int8)}),
        "bad_shape",
        {"max_ndim": 2},
    )
    add("zero-extent-62", "shape [0, 2**62]", pack([entry("w", "float32", [0, 2**62], b"")]), "oversize")
    add(
        "zero-extent-61x4",
        "shape [0, 2**61, 4]",
        pack([entry("w", "float32", [0, 2**61, 4], b"")]),
        "oversize",
    )
    add(
        "zero-extent-within-limit",
        "shape [0, 5] holds no element and is fine",
        pack([entry("w", "float32", [0, 5], b"")]),
        "accepted",
    )
    add("negative-dim", "shape [-1]", pack([entry("w", "float32", [-1], b"")]), "bad_shape")
    add("shape-not-array", "shape is the int 2", pack([entry("w", "float32", 2, b"\x00" * 8)]), "wrong_type")
    add("data-str", "data as str, not bin", pack([entry("w", "int8", [1], "x")]), "wrong_type")
    add("name-empty", "an empty name", pack([entry("", "int8", [1], b"\x00")]), "wrong_type")
    add("not-array", "a map", pack({"w": 1}), "wrong_type")
    add("not-msgpack", "0xc1 is never valid msgpack", b"\xc1", "malformed")
    add("ext-type", "a msgpack extension type", b"\x91\xd4\x01\x00", "wrong_type")
    add(
        "inf",
        "an infinity in a float16 tensor",
        pack([entry("w", "float16", [1], np.array([np.inf], np.float16).tobytes())]),
        "non_finite",
    )
    add(
        "big-endian-looking",
        "dtype '>f4' is not a wire dtype",
        pack([entry("w", ">f4", [1], b"\x00" * 4)]),
        "bad_dtype",
    )
    raw = encode_tensors({"w": np.array([1.0, -2.0], np.float32)})
    for what, old, new in (
        ("the outer array as array16", b"\x91\x94", b"\xdc\x00\x01\x94"),
        ("the entry as array16", b"\x91\x94", b"\x91\xdc\x00\x04"),
        ("the name as str8", b"\xa1w", b"\xd9\x01w"),
        ("the dtype as str16", b"\xa7float32", b"\xda\x00\x07float32"),
        ("the shape as array16", b"\x91\x02\xc4", b"\xdc\x00\x01\x02\xc4"),
        ("a dimension as uint16", b"\x91\x02\xc4", b"\x91\xcd\x00\x02\xc4"),
        ("the data as bin32", b"\xc4\x08", b"\xc6\x00\x00\x00\x08"),
    ):
        add(
            f"non-canonical-{what.replace(' ', '-')}",
            f"{what} instead of its shortest form",
            raw.replace(old, new, 1),
            "non_canonical",
        )
    return v


def record_vectors() -> list[dict[str, Any]]:
    v: list[dict[str, Any]] = []
    ctx = {"network_id": NETWORK, "expected_peer": None}

    def add(
        name: str, description: str, data: bytes, expect: str, context: dict[str, Any] | None = None
    ) -> None:
        v.append(
            {
                "name": name,
                "description": description,
                "input": data.hex(),
                "context": context or ctx,
                "expect": expect,
            }
        )

    rec = PeerRecord.create(
        ALICE, NETWORK, ["/ip4/192.0.2.7/tcp/4101", "/dns/peer.example/tcp/4101"], seq=TS, ttl=300
    )
    _, body, sig = msgpack.unpackb(rec.encoded)
    fields = msgpack.unpackb(body)

    def resigned(body_bytes: bytes, identity: Identity = ALICE) -> bytes:
        return pack([1, body_bytes, identity.sign(RECORD_DOMAIN + body_bytes)])

    add("record", "a valid record of alice with two addresses", rec.encoded, "accepted")
    add(
        "wrong-network",
        "alice's record, expected network 'other'",
        rec.encoded,
        "wrong_network",
        {**ctx, "network_id": "other"},
    )
    add(
        "peer-mismatch",
        "alice's record where bob's was expected",
        rec.encoded,
        "peer_mismatch",
        {**ctx, "expected_peer": BOB.peer_id},
    )
    add("bad-signature", "a bit of the signature flipped", pack([1, body, flip(sig)]), "bad_signature")
    add("signed-by-another", "alice's body signed by bob", resigned(body, BOB), "bad_signature")
    add(
        "non-canonical-body",
        "ttl 300 as uint32 instead of uint16 (re-signed)",
        resigned(body.replace(b"\xa3ttl\xcd\x01\x2c", b"\xa3ttl\xce\x00\x00\x01\x2c")),
        "non_canonical",
    )
    add("non-canonical-outer", "the version as uint8", b"\x93\xcc\x01" + rec.encoded[2:], "non_canonical")
    add("schema-extra-field", "the body has an extra key", resigned(pack({**fields, "zz": 1})), "schema")
    add(
        "schema-bin-key",
        "the body's key ttl as bin",
        resigned(pack({**{k: x for k, x in fields.items() if k != "ttl"}, b"ttl": 300})),
        "schema",
    )
    add(
        "schema-addr",
        "an unspecified address 0.0.0.0",
        resigned(pack({**fields, "addrs": [f"/ip4/0.0.0.0/tcp/1/p2p/{ALICE.peer_id}"]})),
        "schema",
    )
    add("malformed", "not msgpack", b"\xc1", "malformed")
    add("oversize", "5000 bytes (records are capped at 4096)", b"\x00" * 5000, "oversize")
    return v


def build() -> dict[str, dict[str, Any]]:
    identities = {name: {"seed": IDS[name].seed.hex(), "peer_id": IDS[name].peer_id} for name in IDS}
    out = {}
    for kind, vectors in (
        ("envelopes", envelope_vectors()),
        ("payloads", payload_vectors()),
        ("records", record_vectors()),
    ):
        for vec in vectors:
            got = REPLAY[kind](bytes.fromhex(vec["input"]), vec["context"])
            intended = vec.pop("expect")
            actual = got["outcome"] if got["outcome"] == "accepted" else got["reason"]
            if actual != intended:
                raise SystemExit(f"{kind}/{vec['name']}: meant to be {intended}, the reference says {actual}")
            vec["expect"] = got
        names = [vec["name"] for vec in vectors]
        assert len(set(names)) == len(names), f"duplicate vector names in {kind}"
        out[kind] = {"format": FORMAT, "kind": kind, "identities": identities, "vectors": vectors}
    return out


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def main() -> None:
    for kind, doc in build().items():
        (HERE / f"{kind}.json").write_text(dumps(doc), encoding="utf-8")
        print(f"wrote {HERE / (kind + '.json')}: {len(doc['vectors'])} vectors", file=sys.stderr)


if __name__ == "__main__":
    main()
