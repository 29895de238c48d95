"""The process-wide memos of decoded headers and payloads (``p2pfl.wire.decode_header``,
``decode_tensors``): only accepted bytes are remembered, keyed on their exact bytes, and the shared results
are immutable."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.identity import Identity
from p2pfl.wire import (
    Limits,
    NonCanonicalError,
    NonFiniteError,
    OversizeError,
    WireError,
    decode_header,
    decode_tensors,
    encode_header,
    encode_tensors,
)
from p2pfl.wire import header as header_mod
from p2pfl.wire import tensors as tensors_mod
from p2pfl.wire.header import Header, Meta
from tests.strategies import seeds
from tests.wire.test_wire import header_map


@pytest.fixture(autouse=True)
def _fresh_memo() -> Iterator[None]:
    header_mod._decode_header_memo.cache_clear()
    yield
    header_mod._decode_header_memo.cache_clear()


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


@settings(max_examples=60, deadline=None)
@given(seeds, st.integers(1, 2**40), st.integers(0, 10_000), st.integers(1, 255))
def test_bytes_that_differ_from_a_memoised_header_never_decode_to_it(
    seed: bytes, seq: int, pos: int, mask: int
) -> None:
    header_mod._decode_header_memo.cache_clear()
    alice = Identity(seed)
    canonical = pack(header_map(alice, seq=seq, meta={"loss": 0.25, "round": 3, "samples": 80}))
    first = decode_header(canonical)
    assert decode_header(canonical) is first  # the memoised answer
    i = pos % len(canonical)
    changed = canonical[:i] + bytes([canonical[i] ^ mask]) + canonical[i + 1 :]
    try:
        other = decode_header(changed)
    except WireError:
        return
    assert other != first
    assert encode_header(other) == changed


def test_a_non_canonical_spelling_is_refused_after_the_canonical_one_was_memoised(alice: Identity) -> None:
    canonical = pack(header_map(alice))
    decode_header(canonical)
    wide = canonical.replace(pack("seq") + b"\x01", pack("seq") + b"\xcf" + struct.pack(">Q", 1))
    reordered = pack(dict(reversed(list(header_map(alice).items()))))
    for spelling in (wide, reordered):
        for _ in range(2):  # refused every time: refusals are not remembered
            with pytest.raises(NonCanonicalError):
                decode_header(spelling)
    assert header_mod._decode_header_memo.cache_info().currsize == 1


def test_repeated_bytes_are_answered_from_the_memo_and_the_result_is_immutable(alice: Identity) -> None:
    canonical = pack(header_map(alice))
    h = decode_header(canonical)
    before = header_mod._decode_header_memo.cache_info()
    assert decode_header(bytearray(canonical)) is h
    assert decode_header(memoryview(canonical)) is h
    after = header_mod._decode_header_memo.cache_info()
    assert (after.hits, after.misses) == (before.hits + 2, before.misses)
    assert isinstance(h, Header) and isinstance(h.meta, Meta)
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.seq = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.meta.round = 9  # type: ignore[misc]
    assert header_mod._decode_header_memo.cache_info().maxsize == header_mod.DECODED_MEMO_SIZE


# ------------------------------------------------------------------------------------ decoded tensors


@pytest.fixture
def fresh_tensor_memo() -> Iterator[None]:
    tensors_mod._memo.clear()
    yield
    tensors_mod._memo.clear()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=40),
    st.integers(0, 10_000),
    st.integers(1, 255),
)
def test_a_payload_that_differs_from_a_memoised_one_decodes_to_its_own_values(
    values: list[float], pos: int, mask: int
) -> None:
    tensors_mod._memo.clear()
    arr = np.array(values, dtype=np.float32)
    payload = encode_tensors({"b": np.ones(2, np.float32), "w": arr})
    first = decode_tensors(payload)
    assert np.array_equal(decode_tensors(payload)["w"], arr)  # the memoised answer
    start = len(payload) - arr.nbytes  # the last tensor's data: a forger changes one value
    i = start + pos % arr.nbytes
    changed = payload[:i] + bytes([payload[i] ^ mask]) + payload[i + 1 :]
    try:
        other = decode_tensors(changed)
    except WireError:  # e.g. the changed bits make a NaN
        return
    assert other["w"].tobytes() == changed[start:]
    assert other["w"].tobytes() != first["w"].tobytes()


@pytest.mark.usefixtures("fresh_tensor_memo")
def test_memoised_tensors_are_read_only_and_each_call_gets_its_own_dict() -> None:
    payload = encode_tensors(
        {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "e": np.zeros(0, np.float32)}
    )
    a = decode_tensors(payload)
    for arr in a.values():
        with pytest.raises(ValueError):
            arr[...] = 7.0
        with pytest.raises(ValueError):
            arr.flags.writeable = True
    a["w"] = np.zeros((2, 3), np.float32)
    del a["e"]
    b = decode_tensors(memoryview(payload))
    assert b is not a and sorted(b) == ["e", "w"]
    assert b["w"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert len(tensors_mod._memo) == 1


@pytest.mark.usefixtures("fresh_tensor_memo")
def test_refused_payloads_are_checked_every_time_and_never_remembered() -> None:
    good = encode_tensors({"w": np.ones(3, np.float32)})
    bad = good[:-4] + np.float32(np.nan).tobytes()
    decode_tensors(good)
    for _ in range(2):
        with pytest.raises(NonFiniteError):
            decode_tensors(bad)
    tight = Limits(max_elements=2)
    for _ in range(2):  # the memoised bytes under other limits are checked against those
        with pytest.raises(OversizeError):
            decode_tensors(good, limits=tight)
    assert len(tensors_mod._memo) == 1


@pytest.mark.usefixtures("fresh_tensor_memo")
def test_the_tensor_memo_is_bounded_by_its_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tensors_mod._memo, "max_bytes", 2000)
    for i in range(40):
        payload = encode_tensors({"w": np.full(50, i, np.float32)})
        assert decode_tensors(payload)["w"][0] == i
        assert tensors_mod._memo.nbytes <= 2000
    assert 0 < len(tensors_mod._memo) < 40
    big = encode_tensors({"w": np.zeros(tensors_mod.MEMO_PAYLOAD_MAX // 4 + 1, np.float32)})
    decode_tensors(big)
    assert all(len(k[0]) <= tensors_mod.MEMO_PAYLOAD_MAX for k in tensors_mod._memo._items)
