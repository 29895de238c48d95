"""A yamux frame write is never cut in half by its caller's cancellation (py-libp2p 0.8.1's was: the peer then
read lengths out of payload bytes and every other stream of the connection ended truncated, reset or stuck),
on the fast path (:class:`FastYamux`) and off it (:class:`WholeFrameYamux`, py-libp2p's streams); the shield
that guarantees it is bounded; and the frame reader never waits for the write lock (a writer stuck on a full
socket held it, and both ends' readers waiting for it was a deadlock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2pfl.transport.libp2p.compat_frames import FRAME_WRITE_GRACE_S, WholeFrameYamux
from p2pfl.transport.libp2p.compat_yamux import FastYamux
from tests.transport.libp2p.test_fast_yamux import (
    ACK,
    DATA,
    HEADER,
    PEER,
    PING,
    SYN,
    WINDOW_UPDATE,
    FakeSecure,
    frame,
)

MUXERS = [FastYamux, WholeFrameYamux]


class StallingSecure(FakeSecure):
    """A secured connection whose first large write stalls half-way, as ``send_all`` does into a full
    socket buffer: half the bytes are on the wire, the rest wait until the test releases them."""

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()
        self.stalled = trio.Event()

    async def write(self, data: bytes) -> None:
        if len(data) < 1000 or self.stalled.is_set():
            self.written += data
            return
        half = len(data) // 2
        self.written += data[:half]
        self.stalled.set()
        await self.release.wait()
        self.written += data[half:]


def whole_frames(wire: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, DATA body) of every frame on ``wire``; fails on a header that is not one, or
    on bytes left over (a frame cut short)."""
    out, pos = [], 0
    while pos < len(wire):
        assert len(wire) - pos >= HEADER.size, f"{len(wire) - pos} bytes left: a cut header"
        version, typ, flags, sid, length = HEADER.unpack(wire[pos : pos + HEADER.size])
        assert version == 0 and typ in (DATA, WINDOW_UPDATE, PING), f"not a frame header at {pos}"
        body_len = length if typ == DATA else 0
        pos += HEADER.size
        assert pos + body_len <= len(wire), f"a frame of {body_len} bytes cut at {len(wire) - pos}"
        out.append((typ, flags, sid, wire[pos : pos + body_len]))
        pos += body_len
    return out


@pytest.mark.parametrize("muxer", MUXERS)
def test_a_cancelled_writer_leaves_whole_frames_and_the_other_streams_go_on(muxer: type[Yamux]) -> None:
    async def main() -> None:
        secure = StallingSecure()
        mux = muxer(secure, PEER, is_initiator=True)  # type: ignore[arg-type]
        cancelled, other = await mux.open_stream(), await mux.open_stream()
        payload = bytes(range(256)) * 200  # 51,200 bytes: one DATA frame, within the window
        async with trio.open_nursery() as nursery:

            async def write_then_give_up() -> None:
                with trio.move_on_after(1.0):  # a request's timeout, a response's write deadline
                    await cancelled.write(payload)

            nursery.start_soon(write_then_give_up)
            await secure.stalled.wait()
            await trio.sleep(2.0)  # the caller's deadline passes while half the frame is out
            secure.release.set()
        await other.write(b"after")
        frames = whole_frames(bytes(secure.written))
        assert frames[-1] == (DATA, 0, other.stream_id, b"after")
        sent = b"".join(body for typ, _, sid, body in frames if typ == DATA and sid == cancelled.stream_id)
        assert payload.startswith(sent) and sent  # what went out of the cancelled stream is whole frames
        assert not secure.closed

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("muxer", MUXERS)
def test_a_write_stuck_past_its_callers_deadline_and_the_grace_closes_the_connection(
    muxer: type[WholeFrameYamux],
) -> None:
    """A peer that takes no byte for that long is stuck; the frame is cut, so the connection must go."""

    async def main() -> None:
        secure = StallingSecure()  # never released
        mux = muxer(secure, PEER, is_initiator=True)  # type: ignore[arg-type]
        stream = await mux.open_stream()
        start = trio.current_time()
        with trio.move_on_after(1.0), pytest.raises(MuxedStreamError, match="cut off"):
            await stream.write(bytes(50_000))
        assert trio.current_time() - start == pytest.approx(1.0 + FRAME_WRITE_GRACE_S)
        assert secure.closed

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("muxer", MUXERS)
def test_closing_the_connection_cuts_a_write_in_progress(muxer: type[WholeFrameYamux]) -> None:
    """A writer without a deadline to a peer that does not read must not hold the close (and a shutdown)."""

    async def main() -> None:
        secure = StallingSecure()  # never released
        mux = muxer(secure, PEER, is_initiator=True)  # type: ignore[arg-type]
        stream = await mux.open_stream()
        failed: list[BaseException] = []

        async def write() -> None:
            try:
                await stream.write(bytes(50_000))
            except MuxedStreamError as exc:
                failed.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await secure.stalled.wait()
            start = trio.current_time()
            with trio.fail_after(1.0):
                await mux.close()
        assert trio.current_time() - start < 1.0
        assert failed and secure.closed

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("muxer", MUXERS)
def test_the_reader_keeps_reading_while_a_writer_is_stuck_on_a_full_socket(muxer: type[Yamux]) -> None:
    """A PING arrives while our writer waits on the peer's full buffer: py-libp2p's reader waited for the
    write lock to answer it and read nothing more (the peer's reader did the same: deadlock). Here the answer
    is queued, the next frame is read at once, and the answer goes out, whole, once the writer is through."""

    async def main() -> None:
        secure = StallingSecure()
        mux = muxer(secure, PEER, is_initiator=True)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mux.start)
            await mux.event_started.wait()
            stream = await mux.open_stream()
            written = trio.Event()

            async def write() -> None:
                await stream.write(bytes(50_000))
                written.set()

            nursery.start_soon(write)
            await secure.stalled.wait()
            secure.feed.send_nowait(frame(PING, SYN, 0, 7))
            secure.feed.send_nowait(frame(DATA, 0, stream.stream_id, 5, b"hello"))
            with trio.fail_after(5):
                while mux.stream_buffers.get(stream.stream_id) != b"hello":
                    await trio.sleep(0.01)
            secure.release.set()
            with trio.fail_after(5):
                await written.wait()
                while (PING, ACK, 0, b"") not in whole_frames(bytes(secure.written)):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


class FullSecure(FakeSecure):
    """A secured connection whose peer takes no more bytes (its socket buffer is full): every write stalls."""

    async def write(self, data: bytes) -> None:
        await trio.sleep_forever()


@pytest.mark.parametrize("muxer", MUXERS)
@pytest.mark.parametrize("caller_s", [1.0, None])
def test_a_close_to_a_peer_that_does_not_read_ends_by_its_callers_deadline(
    muxer: type[WholeFrameYamux], caller_s: float | None
) -> None:
    """The GO_AWAY of a close has no write in progress to cut, and nothing after it on the connection to
    protect: its write must not get the grace of a frame write (a shutdown closing every connection within
    ``cleanup_s`` took 5 s longer per stuck peer), nor the 60 s limit when the caller set no deadline."""

    async def main() -> None:
        secure = FullSecure()
        mux = muxer(secure, PEER, is_initiator=True)  # type: ignore[arg-type]
        start = trio.current_time()
        with trio.move_on_after(caller_s if caller_s is not None else float("inf")):
            await mux.close()
        took = trio.current_time() - start
        bound = caller_s if caller_s is not None else FRAME_WRITE_GRACE_S
        assert took <= bound + 0.2  # + mux.close()'s own 0.1 s sleep
        assert secure.closed

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
