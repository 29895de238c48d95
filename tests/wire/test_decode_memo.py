"""The process-wide memo of decoded headers (``p2pfl.wire.decode_header``): only accepted bytes are
remembered, keyed on their exact bytes, and the shared result is immutable."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.identity import Identity
from p2pfl.wire import NonCanonicalError, WireError, decode_header, encode_header
from p2pfl.wire import header as header_mod
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
