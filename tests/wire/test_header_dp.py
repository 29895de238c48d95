"""The header's optional ``dp`` field (docs/wire-format.md section 3): round trips, old headers, and every
malformed ``dp`` map rejected with a WireError, never another exception."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.identity import Identity
from p2pfl.wire import (
    DPClaim,
    Header,
    MissingFieldError,
    NonCanonicalError,
    NonFiniteError,
    SchemaError,
    UnknownFieldError,
    WireError,
    WrongTypeError,
    decode_header,
    encode_header,
    open_envelope,
    seal,
)
from tests.strategies import loose_encodings
from tests.wire.test_wire import frame, header_map, pack

CAROL = Identity(bytes(range(32)))
finite = st.floats(allow_nan=False, allow_infinity=False)
claims = st.builds(
    DPClaim,
    mode=st.sampled_from(["record", "peer"]),
    epsilon=st.floats(0.0, 1e300),
    delta=st.floats(0.0, 1.0, exclude_min=True, exclude_max=True),
    noise_multiplier=st.floats(0.0, 1e300, exclude_min=True),
    clip_norm=st.floats(0.0, 1e300, exclude_min=True),
)
GOOD = {"clip": 1.0, "delta": 1e-5, "eps": 2.5, "mode": "record", "sigma": 1.1}


def base_header() -> Header:
    return decode_header(pack(header_map(CAROL)))


@settings(max_examples=200, deadline=None)
@given(claims)
def test_a_header_with_a_dp_claim_round_trips_through_bytes_and_a_sealed_envelope(claim: DPClaim) -> None:
    h = replace(base_header(), dp=claim)
    assert decode_header(encode_header(h)) == h
    assert open_envelope(seal(CAROL, h, None)).header.dp == claim


@settings(max_examples=100, deadline=None)
@given(claims, st.data())
def test_a_dp_header_is_accepted_exactly_in_its_canonical_encoding(
    claim: DPClaim, data: st.DataObject
) -> None:
    h = header_map(CAROL, dp=claim.to_wire())
    h = dict(sorted(h.items()))
    encoded, widened = data.draw(loose_encodings(h))
    if widened:
        with pytest.raises(NonCanonicalError):
            open_envelope(frame(CAROL, encoded))
    else:
        assert open_envelope(frame(CAROL, encoded)).header.dp == claim


def test_an_old_header_without_dp_still_decodes_and_encodes_byte_identically() -> None:
    old = pack(header_map(CAROL))
    h = decode_header(old)
    assert h.dp is None
    assert encode_header(h) == old
    assert b"dp" not in old


def test_dp_sorts_between_codec_and_kind() -> None:
    h = replace(base_header(), dp=DPClaim("peer", 1.0, 1e-5, 2.0, 0.5))
    keys = list(h.to_wire())
    assert keys == sorted(keys, key=lambda k: k.encode())
    assert keys.index("dp") == keys.index("codec") + 1


@pytest.mark.parametrize(
    ("dp", "error"),
    [
        ({k: v for k, v in GOOD.items() if k != "eps"}, MissingFieldError),
        ({**GOOD, "q": 0.1}, UnknownFieldError),
        ({**GOOD, "eps": 3}, WrongTypeError),  # an int is not a float64
        ({**GOOD, "eps": True}, WrongTypeError),
        ({**GOOD, "mode": b"record"}, WrongTypeError),
        ({**GOOD, "mode": "sample"}, SchemaError),
        ({**GOOD, "eps": -1.0}, SchemaError),
        ({**GOOD, "delta": 1.0}, SchemaError),
        ({**GOOD, "delta": 0.0}, SchemaError),
        ({**GOOD, "sigma": 0.0}, SchemaError),
        ({**GOOD, "clip": -2.0}, SchemaError),
        ({**GOOD, "eps": float("nan")}, NonFiniteError),
        ({**GOOD, "sigma": float("inf")}, NonFiniteError),
        ({b"eps": 1.0, **{k: v for k, v in GOOD.items() if k != "eps"}}, WrongTypeError),
        ([1.0, 2.0], WrongTypeError),
        ("record", WrongTypeError),
        (None, WrongTypeError),
    ],
)
def test_a_malformed_dp_field_is_rejected_with_its_reason(dp: Any, error: type[WireError]) -> None:
    header = pack(dict(sorted(header_map(CAROL, dp=dp).items())))
    with pytest.raises(error):
        decode_header(header)
    with pytest.raises(error):
        open_envelope(frame(CAROL, header))


scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | finite | st.text(max_size=8)
    | st.binary(max_size=8)
)  # fmt: skip
keys = st.text(max_size=6) | st.binary(max_size=4)
msgpack_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*GOOD, "x"]), msgpack_values, max_size=7) | msgpack_values)
def test_the_header_decoder_stays_total_on_any_dp_value(dp: Any) -> None:
    """Whatever sits under ``dp``: a header or a WireError, nothing else."""
    header = pack(dict(sorted(header_map(CAROL, dp=dp).items())))
    try:
        h = decode_header(header)
    except WireError:
        return
    assert h.dp is not None and encode_header(h) == header
