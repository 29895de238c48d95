"""The roster and certificate codecs: one canonical form, and a total decoder."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.roster import (
    Certificate,
    Roster,
    RosterError,
    decode_cert,
    decode_roster,
    encode_cert,
    encode_roster,
)
from p2pfl.roster.codec import (
    MAX_ROSTER_BYTES,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    roster_body,
)
from tests.roster.strategies import OPERATOR, certificates, closed_roster, pid, rosters

REASONS = {
    "oversize",
    "truncated",
    "trailing_bytes",
    "malformed",
    "wrong_type",
    "bad_magic",
    "invalid",
    "non_canonical",
}


@settings(deadline=None)  # no wall-clock limit: the machine is shared
@given(rosters())
def test_a_roster_round_trips_through_its_encoding(roster: Roster) -> None:
    data = encode_roster(roster)
    assert roster == decode_roster(data)
    assert data == encode_roster(decode_roster(data))


@settings(deadline=None)  # no wall-clock limit: the machine is shared
@given(certificates())
def test_a_certificate_round_trips_through_its_encoding(cert: Certificate) -> None:
    assert cert == decode_cert(encode_cert(cert))


@settings(deadline=None)  # no wall-clock limit: the machine is shared
@given(rosters(), st.data())
def test_any_change_to_a_roster_encoding_is_refused_or_decodes_to_something_else(
    roster: Roster, data: st.DataObject
) -> None:
    raw = bytearray(encode_roster(roster))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        other = decode_roster(bytes(raw))
    except RosterError as exc:
        assert exc.reason in REASONS
    else:
        assert encode_roster(other) == bytes(raw)  # the only accepted form of what it decodes to
        assert other != roster


@settings(deadline=None)  # no wall-clock limit: the machine is shared
@given(st.binary(max_size=400))
def test_the_roster_decoder_is_total_on_random_bytes(data: bytes) -> None:
    for decode in (decode_roster, decode_cert, decode_request, decode_response):
        try:
            decode(data)
        except RosterError as exc:
            assert exc.reason in REASONS


# a msgpack value of any shape: what a hostile file or neighbour can send
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=10),
    max_leaves=30,
)


@settings(deadline=None)  # no wall-clock limit: the machine is shared
@given(values, st.sampled_from(["p2pfl/roster", "p2pfl/cert", "p2pfl/roster-resp"]))
def test_the_decoders_are_total_on_any_msgpack_value_behind_the_right_magic(
    value: object, magic: str
) -> None:
    for shape in ([magic, 1, value], [magic, 1, *([value] * 8)], [magic, 1, value, value]):
        data = msgpack.packb(shape, use_bin_type=True)
        for decode in (decode_roster, decode_cert, decode_response):
            try:
                decode(data)
            except RosterError as exc:
                assert exc.reason in REASONS


def fields(roster: Roster) -> list[object]:
    return msgpack.unpackb(encode_roster(roster), raw=False)  # type: ignore[no-any-return]


def test_a_non_shortest_integer_is_refused_as_non_canonical() -> None:
    roster = closed_roster({pid(1): "a"})
    raw = encode_roster(roster)
    short = msgpack.packb(roster.version)  # 0x01
    # the same fields with the version as a uint64: the same value, another encoding
    head = msgpack.packb(fields(roster)[:3], use_bin_type=True)
    assert head[0] == 0x93 and raw.startswith(b"\x9a" + head[1:])
    body = raw[len(head) :]
    assert body.startswith(short)
    longer = b"\x9a" + head[1:] + b"\xcf" + roster.version.to_bytes(8, "big") + body[len(short) :]
    with pytest.raises(RosterError) as err:
        decode_roster(longer)
    assert err.value.reason == "non_canonical"


def test_unsorted_or_duplicate_members_are_refused() -> None:
    roster = closed_roster({pid(1): "a", pid(2): "a"})
    f = fields(roster)
    f[7] = list(reversed(f[7]))  # type: ignore[call-overload,index]
    with pytest.raises(RosterError) as err:
        decode_roster(msgpack.packb(f, use_bin_type=True))
    assert err.value.reason == "invalid"
    f[7] = [f[7][0], f[7][0]]  # type: ignore[index]
    with pytest.raises(RosterError) as err:
        decode_roster(msgpack.packb(f, use_bin_type=True))
    assert err.value.reason == "invalid"


@pytest.mark.parametrize(
    ("index", "value", "reason"),
    [
        (3, True, "wrong_type"),  # a bool is no version
        (3, -1, "invalid"),
        (3, 1.0, "wrong_type"),
        (5, "key", "wrong_type"),
        (5, b"short", "invalid"),
        (6, {"a": 1}, "wrong_type"),
        (7, [["not a peer id", "a", []]], "invalid"),
        (7, [[None, "a", []]], "wrong_type"),
        (9, "sig", "wrong_type"),
        (9, b"x" * 63, "invalid"),
        (0, "p2pfl/cert", "bad_magic"),
        (1, 2, "malformed"),
    ],
)
def test_wrong_types_and_values_are_refused_with_their_reason(index: int, value: object, reason: str) -> None:
    f = fields(closed_roster({pid(1): "a"}))
    f[index] = value
    with pytest.raises(RosterError) as err:
        decode_roster(msgpack.packb(f, use_bin_type=True))
    assert err.value.reason == reason


def test_an_oversize_roster_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(RosterError) as err:
        decode_roster(b"\x90" * (MAX_ROSTER_BYTES + 1))
    assert err.value.reason == "oversize"


def test_a_member_of_an_unlisted_org_or_above_max_nodes_is_invalid() -> None:
    f = fields(closed_roster({pid(1): "a"}))
    f[7] = [[pid(1), "zzz", []]]
    with pytest.raises(RosterError, match="does not list") as err:
        decode_roster(msgpack.packb(f, use_bin_type=True))
    assert err.value.reason == "invalid"
    with pytest.raises(RosterError, match="max_nodes"):
        closed_roster({pid(1): "a", pid(2): "a"}, max_nodes=1)


def test_trailing_and_truncated_bytes_are_refused() -> None:
    raw = encode_roster(closed_roster({pid(1): "a"}))
    for bad, reason in ((raw + b"\x00", "trailing_bytes"), (raw[:-1], "truncated")):
        with pytest.raises(RosterError) as err:
            decode_roster(bad)
        assert err.value.reason == reason


def test_the_signature_covers_the_body_not_itself() -> None:
    roster = closed_roster({pid(1): "a"})
    assert roster_body(roster) == encode_roster(roster)[: len(roster_body(roster))].replace(
        b"\x9a", b"\x99", 1
    )
    assert OPERATOR.public_key == roster.operator


def test_exchange_messages_round_trip_and_bound_their_contents() -> None:
    assert 7 == decode_request(encode_request(7))
    body = encode_roster(closed_roster({pid(1): "a"}))
    assert (body, [b"c1"]) == decode_response(encode_response(body, [b"c1"]))
    assert (None, []) == decode_response(encode_response(None, []))
    too_many = msgpack.packb(["p2pfl/roster-resp", 1, None, [b"c"] * 300], use_bin_type=True)
    with pytest.raises(RosterError) as err:
        decode_response(too_many)
    assert err.value.reason == "oversize"


@settings(deadline=None)  # no wall-clock limit: the machine is shared
@given(rosters())
def test_peek_gives_the_signed_body_without_decoding_the_roster(roster: Roster) -> None:
    from p2pfl.roster.codec import peek_roster

    assert (roster.network_id, roster.version, roster.operator, roster_body(roster), roster.signature) == (
        peek_roster(encode_roster(roster))
    )
