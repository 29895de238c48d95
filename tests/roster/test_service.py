"""The peer's roster exchange without a network: what a neighbour's answer can and cannot do."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import msgpack
import pytest
import trio

from p2pfl.identity import Identity
from p2pfl.roster import RosterError, encode_cert, encode_roster
from p2pfl.roster.codec import decode_response, encode_request, encode_response
from p2pfl.roster.service import Access
from tests.roster.peers import ident, roster_of, wall_ms, write_roster
from tests.roster.strategies import cert_for


def access(tmp_path: Path) -> Access:
    return Access(write_roster(tmp_path / "roster.bin", roster_of([0, 1])), "net", state_dir=tmp_path)


def answer(roster: object = None, certs: list[bytes] | None = None) -> bytes:
    return encode_response(None if roster is None else encode_roster(roster), certs or [])  # type: ignore[arg-type]


def test_a_newer_roster_is_adopted_and_kept_in_the_state_dir(tmp_path: Path) -> None:
    a = access(tmp_path)
    assert a.take_response("n", answer(roster_of([0], version=2, revoked=(1,))))
    assert 2 == a.gate.roster.version
    assert (tmp_path / "roster.bin").exists()


@pytest.mark.parametrize(
    ("roster", "reason"),
    [
        (roster_of([0, 1, 5], version=9, operator=Identity(bytes([66]) * 32)), "wrong_operator"),
        (roster_of([0, 1, 5], version=9, network_id="other"), "wrong_network"),
        (dataclasses.replace(roster_of([0, 1, 5], version=9), signature=bytes(64)), "bad_signature"),
        (roster_of([0, 1, 5], version=9, expires_ms=wall_ms() - 1), "expired"),
    ],
)
def test_forged_foreign_and_expired_rosters_are_counted_not_adopted(
    tmp_path: Path, roster: object, reason: str
) -> None:
    a = access(tmp_path)
    assert not a.take_response("n", answer(roster))
    assert (1, {reason: 1}) == (a.gate.roster.version, dict(a.gate.rosters_refused))
    assert not a.allowed(ident(5).peer_id)


def test_a_replayed_older_roster_is_ignored_quietly(tmp_path: Path) -> None:
    a = access(tmp_path)
    a.take_response("n", answer(roster_of([0], version=3)))
    assert not a.take_response("n", answer(roster_of([0, 1], version=2)))
    assert (3, {}) == (a.gate.roster.version, dict(a.gate.rosters_refused))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb(["p2pfl/roster-resp", 1, b"\x93junk", []]),
        msgpack.packb(["p2pfl/roster-resp", 1, None, [b"junk", 5]]),
        msgpack.packb(["p2pfl/roster-resp", 1, None, [b"\x00" * 2000]]),
    ],
)
def test_garbage_answers_are_counted_never_raised(tmp_path: Path, data: bytes) -> None:
    a = access(tmp_path)
    assert not a.take_response("n", data)
    assert sum(a.gate.rosters_refused.values()) + sum(a.gate.certs_refused.values()) >= 1
    assert 1 == a.gate.roster.version


def test_valid_certificates_in_an_answer_are_learned_and_forged_ones_counted(tmp_path: Path) -> None:
    a = access(tmp_path)
    good = encode_cert(cert_for(ident(5).peer_id, expires_ms=wall_ms() + 10**6))
    forged = encode_cert(
        dataclasses.replace(
            cert_for(ident(6).peer_id, expires_ms=wall_ms() + 10**6), peer_id=ident(7).peer_id
        )
    )
    a.take_response("n", answer(None, [good, forged]))
    assert a.allowed(ident(5).peer_id) and not a.allowed(ident(7).peer_id)
    assert {"bad_signature": 1} == dict(a.gate.certs_refused)


async def test_serve_answers_with_the_roster_only_when_newer_and_refuses_bad_requests(tmp_path: Path) -> None:
    a = access(tmp_path)
    roster, certs = decode_response(await a.serve("n", encode_request(0)))
    assert roster == encode_roster(a.gate.roster) and certs == []
    assert (None, []) == decode_response(await a.serve("n", encode_request(1)))
    with pytest.raises(RosterError):
        await a.serve("n", b"\x00")
    await trio.lowlevel.checkpoint()


def test_a_roster_rewritten_within_one_clock_tick_is_still_adopted(tmp_path: Path) -> None:
    """The file's mtime does not tell a rewrite within one tick of the filesystem's coarse clock: the new
    version must be adopted all the same (the file's bytes decide)."""
    path = write_roster(tmp_path / "roster.bin", roster_of([0, 1, 2]))
    access = Access(path, "net")
    before = path.stat()
    write_roster(path, roster_of([0, 1], version=2, revoked=(2,)))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same tick
    assert access.reload()
    assert access.gate.roster.version == 2
    assert not access.reload()  # unchanged bytes: nothing to adopt
