"""Fixed-point encoding and the message decoders (total: a value or a SecAggError with a slug)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from nacl.public import Box

from p2pfl.secagg import REASONS, FixedPoint, SecAggError
from p2pfl.secagg.crypto import agree, identity_box_key, mask_keypair, peer_box_key
from p2pfl.secagg.messages import decode, encode

from .harness import Net, identities


@settings(max_examples=60, deadline=None)
@given(st.lists(arrays(np.float32, 32, elements=st.floats(-1e6, 1e6, width=32)), min_size=1, max_size=16))
def test_decoded_mean_is_within_max_error_of_the_clipped_mean(xs: list[np.ndarray]) -> None:
    fp = FixedPoint()
    total = np.zeros(32, np.uint32)
    for x in xs:
        total += fp.encode(x)[0]
    exact = np.mean([np.clip(x.astype(np.float64), -fp.bound, fp.bound) for x in xs], axis=0)
    assert np.max(np.abs(fp.decode_mean(total, len(xs)).astype(np.float64) - exact)) <= fp.max_error()


def test_clipping_and_non_finite_values_are_counted() -> None:
    fp = FixedPoint(bound=1.0)
    enc, clipped = fp.encode(np.array([0.5, 2.0, -3.0, np.nan, np.inf], np.float32))
    assert clipped == 4
    assert list(fp.decode_mean(enc, 1)) == [0.5, 1.0, -1.0, 0.0, 1.0]


def test_a_group_too_large_for_the_ring_is_refused() -> None:
    fp = FixedPoint(scale_bits=24, bound=16.0)  # 16 * 2^24 = 2^28: at most 7 members fit 31 bits
    assert fp.max_members() == 7
    fp.check_members(7)
    with pytest.raises(SecAggError) as info:
        fp.check_members(8)
    assert info.value.reason == "overflow"


def test_x25519_keys_derived_from_identities_agree() -> None:
    a, b = identities(2)
    box_a, box_b = identity_box_key(a), identity_box_key(b)
    assert bytes(box_a.public_key) == bytes(peer_box_key(a.peer_id))
    sealed = Box(box_a, peer_box_key(b.peer_id)).encrypt(b"share", bytes(24))
    assert Box(box_b, peer_box_key(a.peer_id)).decrypt(sealed) == b"share"
    ska, pka = mask_keypair(bytes(range(32)))
    skb, pkb = mask_keypair(bytes(range(1, 33)))
    assert agree(ska, pkb) == agree(skb, pka)
    with pytest.raises(SecAggError) as info:
        agree(ska, bytes(32))  # the all-zero point has small order
    assert info.value.reason == "weak_key"


NET = Net(dim=8).run()
VALID = [d for _s, _d, d in NET.delivered]


def _decode(data: bytes) -> object:
    return decode(data, group=NET.spec.group, members=NET.spec.members, dim=8)


def test_every_delivered_message_decodes() -> None:
    assert {_decode(d).kind for d in VALID} == {"advertise", "shares", "masked", "view", "unmask"}  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_the_decoder_is_total(valid: bytes, data: st.DataObject) -> None:
    """Mutations, truncations and extensions of real messages: a Message or a SecAggError with a
    documented slug, nothing else."""
    buf = bytearray(valid)
    op = data.draw(st.sampled_from(["flip", "truncate", "extend", "random"]))
    if op == "flip":
        for _ in range(data.draw(st.integers(1, 3))):
            buf[data.draw(st.integers(0, len(buf) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif op == "truncate":
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    elif op == "extend":
        buf += data.draw(st.binary(min_size=1, max_size=16))
    else:
        buf = bytearray(data.draw(st.binary(max_size=400)))
    try:
        _decode(bytes(buf))
    except SecAggError as exc:
        assert exc.reason in REASONS


def test_a_signature_by_another_member_is_rejected() -> None:
    a, b = NET.ident[0], NET.ident[1]
    good = encode(a, "view", NET.spec.group, 1, [[0, 1]])
    forged = good.replace(a.peer_id.encode(), b.peer_id.encode())
    with pytest.raises(SecAggError) as info:
        _decode(forged)
    assert info.value.reason == "bad_signature"


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, 8, elements=st.floats(-0.0009765625, 0.0009765625, width=32)))
def test_small_values_are_rounded_to_the_nearest_step(x: np.ndarray) -> None:
    """The rounding part of the bound on its own (values near 0, where the float32 part vanishes):
    within half a step of 2^-scale_bits, so truncation or a biased rounding fails here."""
    fp = FixedPoint()
    dec = fp.decode_mean(fp.encode(x)[0], 1).astype(np.float64)
    exact = x.astype(np.float64)
    assert np.all(np.abs(dec - exact) <= 0.5 / fp.scale + np.abs(exact) * 2.0**-24 + 1e-15)


def test_peek_round_reads_the_round_of_a_large_message_and_never_raises() -> None:
    """The runtime buffers a later round's messages by this; a 1M-coordinate masked vector included."""
    from p2pfl.secagg.messages import peek_round

    big = encode(NET.ident[0], "masked", NET.spec.group, 7, [[0, 1], bytes(4_000_000)])
    assert peek_round(big) == 7
    assert all(peek_round(d) == 1 for d in VALID)
    for junk in (b"", b"\x97", b"\xc1" * 10, bytes(range(256)), big[:3]):
        assert peek_round(junk) is None
