"""The process-wide memo of successful Ed25519 verifications (``p2pfl.identity.verify``): exact, bounded,
and never a shortcut for bytes that differ from a verified triple in any position."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl import identity as ident
from p2pfl.identity import Identity, verify
from tests.strategies import seeds


@pytest.fixture(autouse=True)
def _fresh_memo() -> Iterator[None]:
    ident._verified.cache_clear()
    yield
    ident._verified.cache_clear()


def _flip(data: bytes, i: int) -> bytes:
    i %= len(data)
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


@settings(max_examples=40, deadline=None)
@given(seeds, seeds, st.binary(min_size=1, max_size=300), st.integers(0, 10_000))
def test_a_memoised_verification_does_not_vouch_for_any_other_triple(
    seed: bytes, other_seed: bytes, msg: bytes, pos: int
) -> None:
    # an adaptive forger who saw a valid triple verified (and memoised) changes one part and replays it:
    # a memo keyed on less than all three byte strings would say True
    ident._verified.cache_clear()
    alice, mallory = Identity(seed), Identity(other_seed)
    sig = alice.sign(msg)
    assert verify(alice.public_key, msg, sig)
    assert verify(alice.public_key, msg, sig)  # the memoised answer
    assert not verify(alice.public_key, msg, _flip(sig, pos))
    assert not verify(alice.public_key, _flip(msg, pos), sig)
    assert not verify(alice.public_key, msg + b"\x00", sig)
    if mallory.public_key != alice.public_key:
        assert not verify(mallory.public_key, msg, sig)
        # mallory's own valid signature of the same message verifies under her key only
        assert verify(mallory.public_key, msg, mallory.sign(msg))
        assert not verify(alice.public_key, msg, mallory.sign(msg))


def test_a_repeated_valid_triple_is_answered_from_the_memo(alice: Identity) -> None:
    sig = alice.sign(b"version 7")
    assert verify(alice.public_key, b"version 7", sig)
    before = ident._verified.cache_info()
    assert verify(alice.public_key, bytearray(b"version 7"), memoryview(sig))  # equal bytes, other types
    after = ident._verified.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


def test_failures_are_checked_every_time_and_never_fill_the_memo(alice: Identity, bob: Identity) -> None:
    forged = bob.sign(b"m")
    for _ in range(3):
        assert not verify(alice.public_key, b"m", forged)
    info = ident._verified.cache_info()
    assert (info.currsize, info.misses) == (0, 3)


def test_the_memo_is_bounded(alice: Identity) -> None:
    assert ident._verified.cache_info().maxsize == ident.VERIFIED_MEMO_SIZE
    for i in range(50):
        assert verify(alice.public_key, b"%d" % i, alice.sign(b"%d" % i))
    assert ident._verified.cache_info().currsize == 50
