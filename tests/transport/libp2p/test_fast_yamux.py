"""The yamux fast path against a hostile peer: every frame a peer can send ends in a value, a reset stream or
a closed connection, never an exception out of the reader, a stall, or more buffering than the window
granted; and a writer out of window wakes on the update itself (py-libp2p polls every 10 ms)."""

from __future__ import annotations

import math
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libp2p.io.exceptions import IncompleteReadError
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import MuxedStreamError

from p2pfl.transport.libp2p.compat_yamux import (
    FRAME_PAYLOAD,
    MAX_FRAME,
    RECV_WINDOW,
    WINDOW_WAIT_S,
    FastYamux,
    FastYamuxStream,
)

HEADER = struct.Struct("!BBHII")
DATA, WINDOW_UPDATE, PING, GO_AWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 1, 2, 4, 8
SPEC_WINDOW = 256 * 1024
PEER = ID(b"\x00\x05hello")


def frame(typ: int, flags: int, sid: int, length: int, body: bytes = b"") -> bytes:
    return HEADER.pack(0, typ, flags, sid, length) + body


class FakeSecure:
    """A secured connection fed by the test: what the hostile peer sends, and what we write back."""

    def __init__(self) -> None:
        self.feed, self._recv = trio.open_memory_channel[bytes](math.inf)
        self._buf = bytearray()
        self.written = bytearray()
        self.closed = False

    async def read(self, n: int | None = None) -> bytes:
        while not self._buf:
            try:
                self._buf += await self._recv.receive()
            except trio.EndOfChannel:
                raise IncompleteReadError("eof", n or 0, 0) from None
        take = len(self._buf) if n is None else min(n, len(self._buf))
        data = bytes(self._buf[:take])
        del self._buf[:take]
        return data

    async def write(self, data: bytes) -> None:
        self.written += data

    async def close(self) -> None:
        self.closed = True

    def frames(self) -> list[tuple[int, int, int, int]]:
        """(type, flags, stream id, length) of every frame we wrote."""
        out, pos, buf = [], 0, bytes(self.written)
        while pos + 12 <= len(buf):
            _, typ, flags, sid, length = HEADER.unpack(buf[pos : pos + 12])
            out.append((typ, flags, sid, length))
            pos += 12 + (length if typ == DATA else 0)
        return out


async def run_reader(frames: list[bytes], *, initiator: bool = True) -> tuple[FastYamux, FakeSecure]:
    """Feed ``frames`` then EOF to a fresh connection's reader; it must return on its own (bounded)."""
    secure = FakeSecure()
    mux = FastYamux(secure, PEER, is_initiator=initiator)  # type: ignore[arg-type]
    for f in frames:
        secure.feed.send_nowait(f)
    secure.feed.close()
    with trio.fail_after(10):
        await mux.handle_incoming()
    return mux, secure


async def test_a_window_update_flood_of_max_increments_is_harmless() -> None:
    flood = [frame(WINDOW_UPDATE, 0, 2, 0xFFFFFFFF)] * 1000
    mux, secure = await run_reader([frame(WINDOW_UPDATE, SYN, 2, 0), *flood, frame(PING, SYN, 0, 7)])
    assert (WINDOW_UPDATE, ACK, 2, 0) in secure.frames()
    assert (PING, ACK, 0, 7) in secure.frames()  # frames after the flood were still served
    assert mux.event_closed.is_set() and secure.closed


async def test_data_past_the_granted_window_resets_that_stream_only() -> None:
    over = SPEC_WINDOW + 1  # a new stream starts with the spec's 256 KiB window
    _, secure = await run_reader(
        [
            frame(WINDOW_UPDATE, SYN, 2, 0),
            frame(DATA, 0, 2, over, bytes(over)),
            frame(WINDOW_UPDATE, SYN, 4, 0),
            frame(DATA, 0, 4, 5, b"hello"),
            frame(PING, SYN, 0, 9),
        ]
    )
    written = secure.frames()
    assert (WINDOW_UPDATE, RST, 2, 0) in written
    assert (WINDOW_UPDATE, RST, 4, 0) not in written
    assert (PING, ACK, 0, 9) in written


async def test_the_window_overrun_is_checked_against_what_was_granted_not_a_constant() -> None:
    """Within the window, several frames are fine; one byte past the sum is not."""
    part = SPEC_WINDOW // 4
    frames = [frame(WINDOW_UPDATE, SYN, 2, 0)] + [frame(DATA, 0, 2, part, bytes(part))] * 4
    _, secure = await run_reader([*frames, frame(DATA, 0, 2, 1, b"x")])
    assert (WINDOW_UPDATE, RST, 2, 0) in secure.frames()
    _, secure = await run_reader(frames)
    assert (WINDOW_UPDATE, RST, 2, 0) not in secure.frames()


@pytest.mark.parametrize(
    "bad",
    [
        HEADER.pack(1, DATA, 0, 2, 0),  # version
        HEADER.pack(0, 4, 0, 2, 0),  # type
        HEADER.pack(0, 0xFF, 0, 2, 0),
        HEADER.pack(0, DATA, 0, 2, MAX_FRAME + 1),  # announced, never read
        HEADER.pack(0, DATA, 0, 2, 0xFFFFFFFF),
    ],
)
async def test_a_malformed_header_closes_the_connection_with_go_away(bad: bytes) -> None:
    mux, secure = await run_reader([bad, frame(PING, SYN, 0, 1)])
    assert secure.frames()[-1] == (GO_AWAY, 0, 0, 1)  # protocol error
    assert (PING, ACK, 0, 1) not in secure.frames()  # nothing after it is read
    assert mux.event_closed.is_set() and secure.closed


async def test_syn_with_our_own_parity_or_id_zero_or_a_live_id_is_refused() -> None:
    mux, secure = await run_reader(
        [
            frame(WINDOW_UPDATE, SYN, 1, 0),  # odd: ours (we are the initiator)
            frame(WINDOW_UPDATE, SYN, 0, 0),
            frame(WINDOW_UPDATE, SYN, 2, 0),
            frame(WINDOW_UPDATE, SYN, 2, 0),  # again, while 2 is open
        ]
    )
    written = secure.frames()
    assert (WINDOW_UPDATE, RST, 1, 0) in written and (WINDOW_UPDATE, RST, 0, 0) in written
    assert written.count((WINDOW_UPDATE, ACK, 2, 0)) == 1
    assert (WINDOW_UPDATE, RST, 2, 0) in written
    accepted = []
    while True:
        try:
            accepted.append(mux.new_stream_receive_channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
    assert [s.stream_id for s in accepted] == [2]


@pytest.mark.parametrize(
    "tail",
    [b"", HEADER.pack(0, DATA, 0, 2, 10)[:5], frame(DATA, 0, 2, 10, b"abc"), frame(DATA, 0, 99, 3, b"abc")],
)
async def test_truncated_or_unknown_stream_frames_end_cleanly(tail: bytes) -> None:
    mux, secure = await run_reader([frame(WINDOW_UPDATE, SYN, 2, 0), tail])
    assert mux.event_closed.is_set() and secure.closed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), max_size=12), st.booleans())
def test_any_bytes_from_a_peer_end_in_a_closed_connection_never_an_exception(
    chunks: list[bytes], initiator: bool
) -> None:
    async def main() -> None:
        mux, secure = await run_reader(
            [frame(WINDOW_UPDATE, SYN, 2, 0), frame(WINDOW_UPDATE, SYN, 3, 0), *chunks], initiator=initiator
        )
        assert mux.event_closed.is_set() and secure.closed
        assert all(len(b) <= SPEC_WINDOW for b in mux.stream_buffers.values())

    trio.run(main)


# ----------------------------------------------------------------------------------------------- writer
async def _writer_setup(nursery: trio.Nursery) -> tuple[FastYamux, FakeSecure, FastYamuxStream]:
    secure = FakeSecure()
    mux = FastYamux(secure, PEER, is_initiator=True)  # type: ignore[arg-type]
    nursery.start_soon(mux.handle_incoming)
    stream = await mux.open_stream()
    assert isinstance(stream, FastYamuxStream)
    return mux, secure, stream


@asynccontextmanager
async def bounded_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery cancelled on the way out, even when an assertion failed inside (no hang on failure)."""
    async with trio.open_nursery() as nursery:
        try:
            yield nursery
        finally:
            nursery.cancel_scope.cancel()


def test_a_writer_out_of_window_wakes_on_the_update_itself() -> None:
    """py-libp2p's writer polls an empty window every 10 ms: with the clock jumping to each timer, its write
    finished 10 ms after the update. Here it finishes at the instant the update arrives."""

    async def main() -> None:
        async with bounded_nursery() as nursery:
            _, secure, stream = await _writer_setup(nursery)
            payload = bytes(SPEC_WINDOW + 1000)
            done_at: list[float] = []

            async def write() -> None:
                await stream.write(payload)
                done_at.append(trio.current_time())

            nursery.start_soon(write)
            await trio.sleep(1.0)  # the window (256 KiB) is spent, the writer waits
            assert not done_at
            sent_at = trio.current_time()
            secure.feed.send_nowait(frame(WINDOW_UPDATE, 0, stream.stream_id, 1000))
            with trio.fail_after(1):  # virtual seconds: each sleep lets the clock jump to the next timer
                while not done_at:
                    await trio.sleep(0.001)
            assert done_at[0] - sent_at == 0
            data = [f for f in secure.frames() if f[0] == DATA]
            assert sum(f[3] for f in data) == len(payload)
            assert max(f[3] for f in data) <= FRAME_PAYLOAD

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_writer_never_given_window_fails_after_the_bound() -> None:
    async def main() -> None:
        async with bounded_nursery() as nursery:
            _, _, stream = await _writer_setup(nursery)
            start = trio.current_time()
            with pytest.raises(MuxedStreamError, match="window update"):
                await stream.write(bytes(SPEC_WINDOW + 1))
            assert trio.current_time() - start == pytest.approx(WINDOW_WAIT_S)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_writer_waiting_for_window_is_released_when_the_connection_ends() -> None:
    async def main() -> None:
        async with bounded_nursery() as nursery:
            _, secure, stream = await _writer_setup(nursery)
            start = trio.current_time()
            nursery.start_soon(secure.feed.aclose)
            with pytest.raises(MuxedStreamError):
                await stream.write(bytes(SPEC_WINDOW + 1))
            assert trio.current_time() - start < WINDOW_WAIT_S

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_a_reader_grants_a_large_window_once_and_then_per_quarter() -> None:
    secure = FakeSecure()
    mux = FastYamux(secure, PEER, is_initiator=False)  # type: ignore[arg-type]
    async with bounded_nursery() as nursery:
        nursery.start_soon(mux.handle_incoming)
        secure.feed.send_nowait(frame(WINDOW_UPDATE, SYN, 1, 0))
        stream = await mux.accept_stream()
        sent = 0
        chunk = bytes(FRAME_PAYLOAD)
        for _ in range(200):  # ~13 MB through an 8 MiB window
            secure.feed.send_nowait(frame(DATA, 0, 1, len(chunk), chunk))
            sent += len(chunk)
            got = 0
            while got < len(chunk):
                got += len(await stream.read(len(chunk) - got))
        updates = [f[3] for f in secure.frames() if f[0] == WINDOW_UPDATE and f[2] == 1 and f[3]]
        offered = SPEC_WINDOW + sum(updates)  # what the peer may have sent in all
        assert sent <= offered <= sent + RECV_WINDOW
        # the offer doubles up to the cap (6 updates), then one per quarter of it: py-libp2p sent one per read
        assert len(updates) <= 6 + sent // (RECV_WINDOW // 4) + 1
        assert max(updates) >= RECV_WINDOW // 4


async def test_a_stream_we_barely_read_offers_no_more_than_the_spec_window() -> None:
    """A peer cannot make us hold more than our reader consumed plus 256 KiB: no early large grant."""
    secure = FakeSecure()
    mux = FastYamux(secure, PEER, is_initiator=False)  # type: ignore[arg-type]
    async with bounded_nursery() as nursery:
        nursery.start_soon(mux.handle_incoming)
        secure.feed.send_nowait(frame(WINDOW_UPDATE, SYN, 1, 0) + frame(DATA, 0, 1, 8, b"request!"))
        stream = await mux.accept_stream()
        assert await stream.read(8) == b"request!"
        await trio.sleep(0.01)
        assert not [f for f in secure.frames() if f[0] == WINDOW_UPDATE and f[2] == 1 and f[3]]
        over = SPEC_WINDOW - 8 + 1
        secure.feed.send_nowait(frame(DATA, 0, 1, over, bytes(over)))
        with trio.fail_after(5):
            while (WINDOW_UPDATE, RST, 1, 0) not in secure.frames():
                await trio.sleep(0.01)
