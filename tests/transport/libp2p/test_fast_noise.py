"""The batched Noise session speaks libp2p Noise exactly (a stock reader-writer reads what it writes and the
other way round) and fails a hostile byte stream with one error type, never anything else."""

from __future__ import annotations

import os

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.io.exceptions import IncompleteReadError
from libp2p.peer.id import ID
from libp2p.security.noise.io import NoiseTransportReadWriter
from libp2p.security.secure_session import SecureSession
from noise.connection import NoiseConnection  # type: ignore[import-untyped]

from p2pfl.errors import TransportError
from p2pfl.transport.libp2p.compat_noise import (
    MAX_PLAINTEXT,
    BatchedNoiseSession,
    NoiseFrameError,
    batched_session,
)


class FakeRaw:
    """A raw connection: reads come from ``data`` in pieces of at most ``piece`` bytes; writes are kept."""

    def __init__(self, data: bytes = b"", piece: int = 1 << 20) -> None:
        self.data, self.piece, self.out = bytearray(data), piece, bytearray()

    async def read(self, n: int | None = None) -> bytes:
        take = min(len(self.data), self.piece, n if n is not None else len(self.data))
        chunk = bytes(self.data[:take])
        del self.data[:take]
        return chunk

    async def write(self, data: bytes) -> None:
        self.out += data

    async def close(self) -> None:
        pass


def noise_pair() -> tuple[NoiseConnection, NoiseConnection]:
    """Two finished Noise states with the libp2p cipher (ChaChaPoly), initiator first."""
    a = NoiseConnection.from_name(b"Noise_NN_25519_ChaChaPoly_SHA256")
    b = NoiseConnection.from_name(b"Noise_NN_25519_ChaChaPoly_SHA256")
    a.set_as_initiator()
    b.set_as_responder()
    a.start_handshake()
    b.start_handshake()
    b.read_message(a.write_message())
    a.read_message(b.write_message())
    assert a.handshake_finished and b.handshake_finished
    return a, b


def stock(raw: FakeRaw, state: NoiseConnection) -> SecureSession:
    kp = create_new_key_pair(b"\x01" * 32)
    pid = ID.from_pubkey(kp.public_key)
    rw = NoiseTransportReadWriter(raw, state)  # type: ignore[arg-type]
    return SecureSession(
        local_peer=pid,
        local_private_key=kp.private_key,
        remote_peer=pid,
        remote_permanent_pubkey=kp.public_key,
        is_initiator=True,
        conn=rw,
    )


def batched(raw: FakeRaw, state: NoiseConnection) -> BatchedNoiseSession:
    session = batched_session(stock(raw, state))
    assert isinstance(session, BatchedNoiseSession)
    return session


async def test_stock_noise_reads_what_we_write_and_we_read_what_it_writes() -> None:
    payload = os.urandom(3 * MAX_PLAINTEXT + 12345)
    a, b = noise_pair()
    ours_out = FakeRaw()
    await batched(ours_out, a).write(payload)
    their_in = stock(FakeRaw(bytes(ours_out.out), piece=7000), b)
    got = bytearray()
    while len(got) < len(payload):
        got += await their_in.read(len(payload) - len(got))
    assert got == payload
    # and back: stock writes, ours reads (in awkward pieces across message boundaries)
    theirs_out = FakeRaw()
    await stock(theirs_out, b).write(payload)
    ours_in = batched(FakeRaw(bytes(theirs_out.out), piece=4099), a)
    assert await ours_in.read(len(payload)) == payload
    with pytest.raises(IncompleteReadError) as eof:
        await ours_in.read(1)
    assert eof.value.is_clean_close


async def test_several_messages_go_out_in_one_write_each_at_most_the_noise_limit() -> None:
    a, b = noise_pair()
    raw = FakeRaw()
    msgs = [os.urandom(MAX_PLAINTEXT), os.urandom(17), os.urandom(MAX_PLAINTEXT)]
    await batched(raw, a).write_messages(msgs)
    reader = stock(FakeRaw(bytes(raw.out)), b)
    for m in msgs:
        assert await reader.read(len(m)) == m
    with pytest.raises(TransportError):
        await batched(FakeRaw(), a).write_messages([bytes(MAX_PLAINTEXT + 1)])


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        ((40).to_bytes(2, "big") + bytes(40), "authentication"),  # a forged message
        ((5).to_bytes(2, "big") + bytes(5), "shorter than its tag"),
        ((100).to_bytes(2, "big") + bytes(50), "inside a Noise message"),  # ends mid-message
        (b"\x00", "inside a Noise message"),
    ],
)
async def test_hostile_bytes_fail_the_session_with_one_error_for_good(wire: bytes, why: str) -> None:
    _, b = noise_pair()
    session = batched(FakeRaw(wire), b)
    with pytest.raises(NoiseFrameError, match=why) as err:
        await session.read(10)
    assert isinstance(err.value, TransportError) and err.value.reason == "noise_frame"
    with pytest.raises((NoiseFrameError, IncompleteReadError)):
        await session.read(10)


async def test_a_replayed_message_fails_authentication() -> None:
    a, b = noise_pair()
    raw = FakeRaw()
    await batched(raw, a).write(b"hello")
    session = batched(FakeRaw(bytes(raw.out) * 2), b)
    assert await session.read(5) == b"hello"
    with pytest.raises(NoiseFrameError, match="authentication"):
        await session.read(5)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 64))
def test_any_bytes_end_in_data_or_one_of_two_errors(wire: bytes, piece: int) -> None:
    async def main() -> None:
        _, b = noise_pair()
        session = batched(FakeRaw(wire, piece), b)
        for _ in range(len(wire) + 2):
            try:
                await session.read(7)
            except (NoiseFrameError, IncompleteReadError):
                return
        raise AssertionError("a session kept returning data from forged bytes")

    trio.run(main)
