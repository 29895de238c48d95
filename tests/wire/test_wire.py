from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.identity import Identity
from p2pfl.wire import (
    SIGNING_DOMAIN,
    ZERO_DIGEST,
    DigestMismatchError,
    DtypeError,
    DuplicateNameError,
    Header,
    Limits,
    MalformedError,
    Meta,
    MissingFieldError,
    NetworkMismatchError,
    NonCanonicalError,
    NonFiniteError,
    OversizeError,
    SchemaError,
    SenderMismatchError,
    SenderNotAllowedError,
    ShapeError,
    SignatureError,
    TrailingBytesError,
    TruncatedError,
    UnknownFieldError,
    VersionError,
    WireError,
    WrongTypeError,
    apply_codec,
    arch_digest,
    check_payload,
    decode_header,
    decode_tensors,
    digest,
    encode_header,
    encode_tensors,
    iter_reasons,
    model_digest,
    open_envelope,
    payload_parts,
    seal,
    undo_codec,
)
from tests.conftest import make_envelope
from tests.strategies import assert_tensors_equal, float_tensor_dicts, loose_encodings, tensor_dicts

Factory = Callable[..., bytes]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def frame(identity: Identity, header: bytes, payload: bytes | None = None, version: int = 1) -> bytes:
    """An envelope around arbitrary header bytes, validly signed, to reach the checks after the signature."""
    sig = identity.sign(SIGNING_DOMAIN + header)
    return (
        b"\x94" + pack(version) + pack(header) + pack(sig) + (b"\xc0" if payload is None else pack(payload))
    )


def header_map(identity: Identity, **changes: Any) -> dict[str, Any]:
    delta = {"w": np.ones(3, np.float32)}
    _, pdigest, psize = payload_parts(delta)
    h = Header(
        kind="delta",
        network_id="testnet",
        sender=identity.peer_id,
        seq=1,
        base=ZERO_DIGEST,
        result=model_digest(delta),
        arch=arch_digest(delta),
        payload_digest=pdigest,
        payload_size=psize,
    ).to_wire()
    h.update(changes)
    return h


def tensor_entry(name: str, dtype: str, shape: list[int], data: bytes) -> list[Any]:
    return [name, dtype, shape, data]


# ------------------------------------------------------------------------------------------ round trips


@settings(max_examples=150, deadline=None)
@given(tensor_dicts)
def test_tensors_round_trip_exactly(tensors: dict[str, np.ndarray]) -> None:
    payload = encode_tensors(tensors)
    assert_tensors_equal(tensors, decode_tensors(payload))
    assert digest(payload) == model_digest(tensors)


@settings(max_examples=50, deadline=None)
@given(float_tensor_dicts, st.integers(1, 2**64 - 1), st.booleans())
def test_sealed_envelope_opens_to_the_same_header_and_tensors(
    tensors: dict[str, np.ndarray], seq: int, inline: bool
) -> None:
    alice = Identity(bytes(32))
    env = open_envelope(make_envelope(alice, tensors, seq=seq, inline=inline), network_id="testnet")
    assert (alice.peer_id, seq, "delta") == (env.header.sender, env.header.seq, env.header.kind)
    if inline:
        assert env.payload is not None
        assert_tensors_equal(tensors, decode_tensors(env.payload))
    else:
        assert env.payload is None
        check_payload(encode_tensors(tensors), env.header)


def test_encoding_is_canonical_whatever_the_dict_order() -> None:
    a = {"b": np.ones(2, np.float32), "a": np.zeros(1, np.int64)}
    b = {"a": np.zeros(1, np.int64), "b": np.ones(2, np.float32)}
    assert encode_tensors(a) == encode_tensors(b)


def test_big_endian_and_non_contiguous_inputs_encode_as_little_endian_c_order() -> None:
    base = np.arange(12, dtype=">f4").reshape(3, 4)
    tensors = {"t": base.T}
    decoded = decode_tensors(encode_tensors(tensors))["t"]
    assert decoded.dtype == np.dtype("<f4")
    assert np.array_equal(base.T, decoded)


def test_decoded_arrays_are_read_only() -> None:
    arr = decode_tensors(encode_tensors({"w": np.ones(4, np.float32)}))["w"]
    with pytest.raises(ValueError):
        arr[0] = 2


TEST_VECTOR_ENVELOPE = (
    "9401c501478ca461726368c420608091896a2117c4afae2bda73b7a269b2c129a59abae52963b2795e5905e3b6a462617365c420"
    "06949ac9de20ec30290886f4baa20c7bd540e64505c2e042bb2966fbba9112e8a5636f646563a3726177a46b696e64a564656c74"
    "61a46d65746183a46c6f7373cb3fe0000000000000a5726f756e6401a773616d706c657320a36e6574a464656d6fae7061796c6f"
    "61645f646967657374c4206dfcdec43546df02113a069b0998157e70a8ccc3c3967a8db6bc4fae2b776dc6ac7061796c6f61645f"
    "73697a6518a6726573756c74c4202ea952646106b7d4feed3a44cfa0381345cf2956fd4cef64dc7c3c98826c7f65a673656e6465"
    "72d934313244334b6f6f574134586f70314a6154334d487877594d6b436570597376346950566f704d5877437a35694859644266"
    "655342a373657101a27473cf0000018bcfe56800c440ddea5b2857a375500061505fe8d3f596cca0597e1b511a352eeeebb7621"
    "6b8034c861d86329424b32cf5af2cb7631edbb2f1a3c7b4d3085f09677758bd6b1209c4189194a177a7666c6f61743332910"
    "2c4080000803f000000c0"
)


def test_sealing_reproduces_the_documented_test_vector() -> None:
    """docs/wire-format.md section 10: a change to the encoding cannot slip by unnoticed."""
    alice = Identity(bytes(range(32)))
    assert alice.peer_id == "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"
    base = {"w": np.array([0.5, 0.5], np.float32)}
    delta = {"w": np.array([1.0, -2.0], np.float32)}
    payload = encode_tensors(delta)
    header = Header(
        kind="delta",
        network_id="demo",
        sender=alice.peer_id,
        seq=1,
        base=model_digest(base),
        result=model_digest({"w": base["w"] + delta["w"]}),
        arch=arch_digest(delta),
        payload_digest=digest(payload),
        payload_size=len(payload),
        codec="raw",
        meta=Meta(samples=32, loss=0.5, round=1),
        timestamp_ms=1_700_000_000_000,
    )
    assert seal(alice, header, payload).hex() == TEST_VECTOR_ENVELOPE
    assert header == open_envelope(bytes.fromhex(TEST_VECTOR_ENVELOPE)).header


def test_fp16_codec_round_trips_to_the_receiver_dtype() -> None:
    tensors = {"w": np.linspace(-1, 1, 9, dtype=np.float32), "n": np.arange(3, dtype=np.int64)}
    wire = apply_codec(tensors, "fp16")
    assert np.dtype(np.float16) == wire["w"].dtype
    back = undo_codec(decode_tensors(encode_tensors(wire)), "fp16", tensors)
    assert np.dtype(np.float32) == back["w"].dtype
    assert np.allclose(tensors["w"], back["w"], atol=1e-3)
    assert np.array_equal(tensors["n"], back["n"])


def test_fp16_codec_refuses_values_that_overflow() -> None:
    with pytest.raises(NonFiniteError, match="overflows float16"):
        apply_codec({"w": np.array([1e6], np.float32)}, "fp16")


def test_every_reason_is_a_distinct_slug() -> None:
    reasons = [cls.reason for cls in iter_reasons()]
    assert len(reasons) == len(set(reasons))


# ------------------------------------------------------------------------- one test per rejection reason


def test_rejects_oversize_before_decoding(envelope_factory: Factory, alice: Identity) -> None:
    data = envelope_factory(alice)
    with pytest.raises(OversizeError):
        open_envelope(data, limits=Limits(max_envelope=len(data) - 1))
    with pytest.raises(OversizeError):
        open_envelope(b"\x00" * 100, limits=Limits(max_envelope=99))  # garbage, but too big comes first


def test_rejects_oversize_header(alice: Identity) -> None:
    data = frame(alice, pack(header_map(alice)))
    with pytest.raises(OversizeError):
        open_envelope(data, limits=Limits(max_header=100))


def test_rejects_truncated_envelope(envelope_factory: Factory, alice: Identity) -> None:
    data = envelope_factory(alice)
    for cut in (1, 2, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(TruncatedError):
            open_envelope(data[:cut])


def test_rejects_trailing_bytes(envelope_factory: Factory, alice: Identity) -> None:
    with pytest.raises(TrailingBytesError):
        open_envelope(envelope_factory(alice) + b"\x00")


def test_rejects_payload_with_trailing_bytes() -> None:
    with pytest.raises(TrailingBytesError):
        decode_tensors(encode_tensors({"w": np.ones(2, np.float32)}) + b"\xc0")


def test_rejects_truncated_payload() -> None:
    with pytest.raises(TruncatedError):
        decode_tensors(encode_tensors({"w": np.ones(2, np.float32)})[:-3])


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x93\x01\xc4\x00\xc4\x00", b"\xc1", pack({"v": 1})])
def test_rejects_data_that_is_not_an_envelope(data: bytes) -> None:
    with pytest.raises((MalformedError, TruncatedError)):
        open_envelope(data)


def test_rejects_unsupported_version(alice: Identity) -> None:
    with pytest.raises(VersionError, match="version 2"):
        open_envelope(frame(alice, pack(header_map(alice)), version=2))


def test_rejects_missing_field(alice: Identity) -> None:
    h = header_map(alice)
    del h["seq"]
    with pytest.raises(MissingFieldError, match="seq"):
        open_envelope(frame(alice, pack(h)))


def test_rejects_unknown_field(alice: Identity) -> None:
    h = header_map(alice, zzz=1)
    with pytest.raises(UnknownFieldError, match="zzz"):
        open_envelope(frame(alice, pack(h)))


def test_rejects_unknown_meta_field(alice: Identity) -> None:
    with pytest.raises(UnknownFieldError, match="labels"):
        open_envelope(frame(alice, pack(header_map(alice, meta={"labels": [1, 2]}))))


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": "1"},
        {"seq": -1},
        {"seq": True},
        {"seq": 1.0},
        {"base": "00" * 32},
        {"base": b"\x00" * 31},
        {"net": 5},
        {"meta": []},
        {"meta": {"loss": "low"}},
        {"meta": {"samples": -3}},
        {"payload_size": None},
    ],
)
def test_rejects_wrong_types(alice: Identity, changes: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        open_envelope(frame(alice, pack(header_map(alice, **changes))))


def test_wrong_type_is_reported_as_such(alice: Identity) -> None:
    with pytest.raises(WrongTypeError, match="seq"):
        open_envelope(frame(alice, pack(header_map(alice, seq="1"))))


@pytest.mark.parametrize(
    "changes",
    [{"kind": "gradient"}, {"codec": "zip"}, {"net": "bad net!"}, {"sender": "alice"}, {"seq": 0}],
)
def test_rejects_invalid_values(alice: Identity, changes: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        open_envelope(frame(alice, pack(header_map(alice, **changes))))


def test_rejects_snapshot_with_a_base(alice: Identity) -> None:
    with pytest.raises(SchemaError, match="snapshot"):
        open_envelope(frame(alice, pack(header_map(alice, kind="snapshot", base=b"\x01" * 32))))


def test_rejects_non_canonical_key_order(alice: Identity) -> None:
    h = dict(reversed(list(header_map(alice).items())))
    with pytest.raises(NonCanonicalError):
        open_envelope(frame(alice, pack(h)))


def test_rejects_non_canonical_integer_width(alice: Identity) -> None:
    canonical = pack(header_map(alice))
    seq_tag = pack("seq") + b"\x01"
    assert seq_tag in canonical
    wide = canonical.replace(seq_tag, pack("seq") + b"\xcf" + struct.pack(">Q", 1))
    with pytest.raises(NonCanonicalError):
        open_envelope(frame(alice, wide))


def test_rejects_float32_loss(alice: Identity) -> None:
    h = header_map(alice, meta={"loss": 0.5})
    data = msgpack.packb(h, use_bin_type=True, use_single_float=True)
    with pytest.raises(NonCanonicalError):
        open_envelope(frame(alice, data))


def test_rejects_non_shortest_bin_length(envelope_factory: Factory, alice: Identity) -> None:
    data = envelope_factory(alice, inline=False)
    # re-frame the signature (64 bytes, bin8) as bin16
    sig_at = data.index(b"\xc4\x40")
    wide = data[:sig_at] + b"\xc5\x00\x40" + data[sig_at + 2 :]
    with pytest.raises(NonCanonicalError):
        open_envelope(wide)


def test_rejects_wrong_network(envelope_factory: Factory, alice: Identity) -> None:
    with pytest.raises(NetworkMismatchError):
        open_envelope(envelope_factory(alice, network_id="other"), network_id="testnet")


def test_rejects_sender_not_allowed(envelope_factory: Factory, alice: Identity, bob: Identity) -> None:
    data = envelope_factory(alice)
    with pytest.raises(SenderNotAllowedError):
        open_envelope(data, allowed={bob.peer_id}.__contains__)
    assert open_envelope(data, allowed={alice.peer_id}.__contains__).header.sender == alice.peer_id


def test_rejects_bad_signature(envelope_factory: Factory, alice: Identity) -> None:
    data = bytearray(envelope_factory(alice, inline=False))
    sig_at = data.index(b"\xc4\x40") + 2
    data[sig_at + 10] ^= 0x40
    with pytest.raises(SignatureError):
        open_envelope(bytes(data))


def test_rejects_header_signed_by_someone_else(alice: Identity, bob: Identity) -> None:
    """Bob signs a header that claims Alice as sender: verification uses the key inside Alice's peer id."""
    with pytest.raises(SignatureError, match="sender"):
        open_envelope(frame(bob, pack(header_map(alice))))


def test_rejects_signer_other_than_the_expected_sender(
    envelope_factory: Factory, alice: Identity, bob: Identity
) -> None:
    with pytest.raises(SenderMismatchError):
        open_envelope(envelope_factory(bob), expected_sender=alice.peer_id)


def test_seal_refuses_header_of_another_sender(alice: Identity, bob: Identity) -> None:
    h = decode_header(pack(header_map(alice)))
    with pytest.raises(SenderMismatchError):
        seal(bob, h, None)


def test_rejects_payload_digest_mismatch(alice: Identity) -> None:
    payload = encode_tensors({"w": np.ones(3, np.float32)})
    other = encode_tensors({"w": np.full(3, 2, np.float32)})
    with pytest.raises(DigestMismatchError):
        open_envelope(frame(alice, pack(header_map(alice)), other))
    assert open_envelope(frame(alice, pack(header_map(alice)), payload)).payload is not None


def test_rejects_payload_size_mismatch(alice: Identity) -> None:
    with pytest.raises(DigestMismatchError, match="bytes"):
        open_envelope(frame(alice, pack(header_map(alice)), b"\x90"))


def test_seal_refuses_payload_not_described_by_header(alice: Identity) -> None:
    h = decode_header(pack(header_map(alice)))
    with pytest.raises(DigestMismatchError):
        seal(alice, h, b"\x90")


@pytest.mark.parametrize("dtype", ["complex64", "object", "float128", "bool", "<f4", "str"])
def test_rejects_dtype_not_allowed(dtype: str) -> None:
    with pytest.raises(DtypeError):
        decode_tensors(pack([tensor_entry("w", dtype, [1], b"\x00" * 4)]))


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_, object, "U3"])
def test_encoding_refuses_dtypes_not_allowed(dtype: Any) -> None:
    with pytest.raises(DtypeError):
        encode_tensors({"w": np.zeros(2, dtype=dtype)})


@pytest.mark.parametrize(
    ("shape", "nbytes"), [([2, 2], 12), ([3], 16), ([0], 4), ([], 0), ([2**40, 2**40], 8)]
)
def test_rejects_shape_byte_count_mismatch(shape: list[int], nbytes: int) -> None:
    with pytest.raises((ShapeError, OversizeError)):
        decode_tensors(pack([tensor_entry("w", "float32", shape, b"\x00" * nbytes)]))


def test_rejects_negative_or_too_many_dimensions() -> None:
    with pytest.raises(ShapeError):
        decode_tensors(pack([tensor_entry("w", "float32", [-1], b"")]))
    with pytest.raises(ShapeError):
        decode_tensors(pack([tensor_entry("w", "float32", [1] * 9, b"\x00" * 4)]))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_rejects_non_finite_values(value: float, dtype: str) -> None:
    arr = np.array([1.0, value, 2.0], dtype=dtype)
    with pytest.raises(NonFiniteError):
        decode_tensors(pack([tensor_entry("w", dtype, [3], arr.tobytes())]))
    with pytest.raises(NonFiniteError):
        encode_tensors({"w": arr})


def test_rejects_duplicate_tensor_names() -> None:
    entry = tensor_entry("w", "float32", [1], b"\x00" * 4)
    with pytest.raises(DuplicateNameError):
        decode_tensors(pack([entry, entry]))


def test_rejects_unsorted_tensor_names() -> None:
    a, b = tensor_entry("a", "int8", [1], b"\x00"), tensor_entry("b", "int8", [1], b"\x00")
    with pytest.raises(NonCanonicalError):
        decode_tensors(pack([b, a]))


@pytest.mark.parametrize(
    "payload",
    [
        {"w": 1},
        [["w", "float32", [1]]],
        [[1, "float32", [1], b"\x00" * 4]],
        [["w", "float32", "1", b"x" * 4]],
        [["w", "float32", [1], "data"]],
        [["", "int8", [1], b"\x00"]],
        [["w", 3, [1], b"\x00"]],
    ],
)
def test_rejects_malformed_tensor_entries(payload: Any) -> None:
    with pytest.raises(WrongTypeError):
        decode_tensors(pack(payload))


def test_rejects_too_many_tensors() -> None:
    payload = encode_tensors({f"t{i:02d}": np.zeros(1, np.int8) for i in range(10)})
    with pytest.raises(WireError):
        decode_tensors(payload, limits=Limits(max_tensors=5))


def test_rejects_msgpack_extension_types() -> None:
    with pytest.raises(WrongTypeError):
        decode_tensors(msgpack.packb([msgpack.ExtType(5, b"xx")]))


def test_rejects_long_tensor_names() -> None:
    with pytest.raises(WireError):
        decode_tensors(pack([tensor_entry("n" * 300, "int8", [1], b"\x00")]))


# ----------------------------------------------------------------------------------- tamper resistance


def test_flipping_any_single_byte_is_rejected(envelope_factory: Factory, alice: Identity) -> None:
    data = envelope_factory(alice, {"w": np.arange(4, dtype=np.float32)})
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            mutated = bytearray(data)
            mutated[i] ^= mask
            with pytest.raises(WireError):
                env = open_envelope(bytes(mutated))
                assert env.payload is not None
                decode_tensors(env.payload)


def test_replacing_the_payload_of_a_valid_envelope_is_rejected(alice: Identity) -> None:
    good = make_envelope(alice, {"w": np.ones(2, np.float32)})
    evil = make_envelope(alice, {"w": np.full(2, 9, np.float32)})
    # splice evil's payload after good's signature
    good_env, evil_env = open_envelope(good), open_envelope(evil)
    assert good_env.payload is not None and evil_env.payload is not None
    spliced = good[: len(good) - len(good_env.payload)] + bytes(evil_env.payload)
    with pytest.raises(DigestMismatchError):
        open_envelope(spliced)


def test_header_round_trip_preserves_meta(alice: Identity) -> None:
    h = replace(decode_header(pack(header_map(alice))), meta=Meta(samples=3, loss=1.5, round=7))
    assert h == decode_header(encode_header(h))


# ------------------------------------------------------------------------------ totality (issue 13)


@pytest.mark.parametrize(
    "changes",
    [{b"arch": b"\x00" * 32, "zzz": 1}, {b"zzz": 1, "zzy": 2}, {"meta": {b"loss": 0.5, "round": 1}}],
)
def test_header_with_a_bin_key_is_wrong_type_before_the_signature(alice: Identity, changes: Any) -> None:
    header = pack(header_map(alice, **{}) | changes)
    data = b"\x94\x01" + pack(header) + pack(b"\x00" * 64) + b"\xc0"  # no valid signature needed
    with pytest.raises(WrongTypeError, match="keys must be msgpack str"):
        open_envelope(data)
    with pytest.raises(WrongTypeError):
        decode_header(header)


@pytest.mark.parametrize(
    "shape", [[0, 2**63], [0, 2**62], [0, 2**61, 4], [2**64 - 1, 0], [0, 2**31 + 1], [0] * 8]
)
def test_zero_element_shapes_beyond_the_element_limit_are_oversize(alice: Identity, shape: list[int]) -> None:
    payload = pack([tensor_entry("w", "float32", shape, b"")])
    if shape == [0] * 8:
        assert decode_tensors(payload)["w"].shape == (0,) * 8  # within the limits: a valid empty tensor
        return
    with pytest.raises(OversizeError):
        decode_tensors(payload)
    # the same bytes validly signed and inline: still one WireError, never numpy's ValueError
    data = frame(
        alice, pack(header_map(alice, payload_digest=digest(payload), payload_size=len(payload))), payload
    )
    env = open_envelope(data)
    assert env.payload is not None
    with pytest.raises(OversizeError):
        decode_tensors(env.payload)


def test_limits_refuse_bounds_numpy_cannot_honour() -> None:
    with pytest.raises(ValueError, match="max_ndim"):
        Limits(max_ndim=65)
    with pytest.raises(ValueError, match="max_elements"):
        Limits(max_elements=1 << 62)


def test_undo_codec_refuses_values_the_model_dtype_cannot_hold() -> None:
    like = {"w": np.zeros(2, np.float32), "i": np.zeros(2, np.int32)}
    with pytest.raises(NonFiniteError):
        undo_codec({"w": np.array([1e300, 0.0])}, "raw", like)
    with pytest.raises(DtypeError):
        undo_codec({"i": np.array([1.5, 0.0])}, "raw", like)
    out = undo_codec({"w": np.array([1.5, 0.0], np.float16)}, "fp16", like)
    assert np.float32 == out["w"].dtype


# ------------------------------------------------------------------------- canonical form (issue 13)

CAROL = Identity(bytes(range(32)))


@settings(max_examples=200, deadline=None)
@given(tensor_dicts, st.data())
def test_a_payload_is_accepted_exactly_in_its_canonical_encoding(
    tensors: dict[str, np.ndarray], data: st.DataObject
) -> None:
    canonical = encode_tensors(tensors)
    encoded, widened = data.draw(loose_encodings(msgpack.unpackb(canonical, raw=False)))
    if widened:
        with pytest.raises(NonCanonicalError):
            decode_tensors(encoded)
    else:
        assert canonical == encoded
        assert_tensors_equal(tensors, decode_tensors(encoded))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.fixed_dictionaries(
        {},
        optional={
            "loss": st.floats(allow_nan=False, allow_infinity=False),
            "round": st.integers(0, 2**64 - 1),
            "samples": st.integers(0, 2**64 - 1),
        },
    ),
    st.data(),
)
def test_a_header_is_accepted_exactly_in_its_canonical_encoding(
    seq: int, ts: int, meta: dict[str, Any], data: st.DataObject
) -> None:
    h = header_map(CAROL, seq=seq, ts=ts, meta=dict(sorted(meta.items())))
    encoded, widened = data.draw(loose_encodings(h))
    if widened:
        with pytest.raises(NonCanonicalError):
            open_envelope(frame(CAROL, encoded))
    else:
        assert pack(h) == encoded
        assert seq == open_envelope(frame(CAROL, encoded)).header.seq


@pytest.mark.parametrize(
    ("canonical", "wide"),
    [
        (b"\x91", b"\xdc\x00\x01"),  # the tensor array's length as array16
        (b"\x94", b"\xdc\x00\x04"),  # an entry's 4-element array as array16
        (b"\xa1w", b"\xd9\x01w"),  # the name as str8
        (b"\xa7float32", b"\xd9\x07float32"),  # the dtype as str8
        (b"\x91\x02", b"\x91\xcc\x02"),  # a dimension as uint8
        (b"\x91\x02", b"\x91\xd0\x02"),  # a dimension as int8
        (b"\x91\x02", b"\x91\xcf" + (2).to_bytes(8, "big")),  # a dimension as uint64
        (b"\xc4\x08", b"\xc5\x00\x08"),  # the data's length as bin16
    ],
)
def test_each_non_shortest_payload_form_is_non_canonical(canonical: bytes, wide: bytes) -> None:
    payload = encode_tensors({"w": np.array([1.0, -2.0], np.float32)})
    assert canonical in payload
    with pytest.raises(NonCanonicalError):
        decode_tensors(payload.replace(canonical, wide, 1))


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_meta_loss_is_non_finite(loss: float) -> None:
    with pytest.raises(NonFiniteError, match=r"meta\.loss"):
        open_envelope(frame(CAROL, pack(header_map(CAROL, meta={"loss": loss}))))
    with pytest.raises(NonFiniteError):
        Meta(loss=loss)
