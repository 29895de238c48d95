"""Yamux for bulk payloads: the same wire protocol as py-libp2p 0.8.1's, without its per-frame waits.

What py-libp2p 0.8.1's yamux spends a 64 MiB payload transfer on (profiled, both processes):

* the receiver sends a WINDOW_UPDATE after *every* read (each one its own Noise message and ``send``), and
  a writer whose send window is empty polls it every 10 ms (``trio.sleep(0.01)``) instead of waking on the
  update;
* every frame is written with its own Noise message(s) and socket write, and a 65,536-byte frame is one
  byte too many for a Noise message, so it goes as two (65,519 + 17 bytes);
* each received frame takes the connection's stream lock and formats a dozen debug f-strings (evaluated
  even with debug logging off), and each read takes it again.

Here (:class:`FastYamux`, :class:`FastYamuxStream`):

* DATA frames carry at most :data:`FRAME_PAYLOAD` bytes, so header and payload fill exactly one Noise
  message, and a write sends up to :data:`SEND_BATCH` bytes of frames in one socket write (with a
  :class:`~.compat_noise.BatchedNoiseSession` below; any other session gets one joined write);
* a writer out of window sleeps on an event that the WINDOW_UPDATE (or the stream's end) sets;
* a reader sends a WINDOW_UPDATE only once a quarter of the window it offers has been consumed (go-yamux's
  rule), and doubles the offer each time up to :data:`RECV_WINDOW`, so one update covers many frames;
* the frame reader (``handle_incoming``) is our own total decoder: every header is checked (version, type,
  stream id parity, length) and a peer that breaks the protocol loses its stream (a DATA frame past the
  window we granted: RST) or its connection (a bad version or type, a frame longer than
  :data:`MAX_FRAME`, a truncated frame: GO_AWAY and close); nothing it sends can raise out of the
  reader or make us buffer more than the window we granted.

Stream ids, flags, the initial 256 KiB window, FIN/RST/GO_AWAY and PING are as in the yamux spec, so a
stock py-libp2p (or go/rust) peer interoperates. Stream bookkeeping (the swarm-facing channel, the backlog
semaphore, finalisation and the stale-stream sweeper) is py-libp2p's own.
"""

from __future__ import annotations

import logging
import struct
from functools import partial
from typing import Final

import trio
from libp2p.abc import ISecureConn
from libp2p.io.exceptions import IncompleteReadError
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamError, MuxedStreamReset
from libp2p.stream_muxer.yamux import yamux as _y
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

from p2pfl.transport.libp2p.compat import UnsupportedLibp2pError
from p2pfl.transport.libp2p.compat_frames import WholeFrameYamux
from p2pfl.transport.libp2p.compat_noise import MAX_PLAINTEXT, BatchedNoiseSession, pop_head

__all__ = [
    "FRAME_PAYLOAD",
    "MAX_FRAME",
    "RECV_WINDOW",
    "SEND_BATCH",
    "WINDOW_WAIT_S",
    "FastYamux",
    "FastYamuxStream",
]

log = logging.getLogger("p2pfl.transport.libp2p")

_HEADER: Final = struct.Struct(_y.YAMUX_HEADER_FORMAT)
HEADER_SIZE: Final[int] = _y.HEADER_SIZE
#: DATA payload per frame: header + payload = the largest Noise plaintext (one message per frame).
FRAME_PAYLOAD: Final[int] = MAX_PLAINTEXT - HEADER_SIZE
#: Bytes of DATA frames a writer hands the secure session at once (one socket write).
SEND_BATCH: Final[int] = 1 << 20
#: The largest receive window a reader offers its peer per stream (the spec's initial window is 256 KiB; the
#: offer doubles with each update, see :meth:`FastYamuxStream._grant`).
RECV_WINDOW: Final[int] = 8 << 20
#: Largest DATA frame accepted (the most window we ever grant); a longer one is a protocol violation and
#: closes the connection before its body is read. A frame within it but past the stream's window resets
#: the stream.
MAX_FRAME: Final[int] = RECV_WINDOW
#: A writer waits this long for window before its write fails (py-libp2p's hard-coded 5 s).
WINDOW_WAIT_S: Final[float] = 5.0
_SPEC_WINDOW: Final[int] = _y.DEFAULT_WINDOW_SIZE
#: Time a peer has to deliver an announced DATA body (py-libp2p's ``PY_YAMUX_DATA_READ_TIMEOUT``, 60 s).
_BODY_TIMEOUT: Final[float] = _y._yamux_data_read_timeout()
_MAX_TYPE: Final[int] = _y.TYPE_GO_AWAY

_REQUIRED: Final = (
    (Yamux, "_finalize_stream_locked"),
    (Yamux, "_cleanup_on_error"),
    (Yamux, "_read_data_body"),
    (Yamux, "_write_frame"),
    (YamuxStream, "send_window_update"),
)


def _check_supported() -> None:
    missing = [f"{c.__name__}.{n}" for c, n in _REQUIRED if not hasattr(c, n)]
    if missing:
        raise UnsupportedLibp2pError(f"py-libp2p yamux without {', '.join(missing)}")


_check_supported()


class FastYamuxStream(YamuxStream):
    """A yamux stream whose writer waits on events and whose reader batches window updates."""

    def __init__(self, stream_id: int, conn: FastYamux, is_initiator: bool) -> None:
        super().__init__(stream_id, conn, is_initiator)
        self.fast_conn = conn
        self.window_changed = trio.Event()
        self.granted = _SPEC_WINDOW  # the receive window we currently offer; doubles up to RECV_WINDOW

    def wake_writer(self) -> None:
        self.window_changed.set()

    async def write(self, data: bytes) -> None:
        view = memoryview(data).cast("B")
        total, sent = len(view), 0
        async with self.rw_lock.write_lock():
            while sent < total:
                if self.send_closed or self.closed:
                    raise MuxedStreamError("Stream is closed for sending")
                window = self.send_window
                if window <= 0:
                    await self._wait_for_window()
                    continue
                n = min(window, total - sent, SEND_BATCH)
                self.send_window = window - n
                await self.fast_conn.send_data(self.stream_id, view[sent : sent + n])
                sent += n

    async def _wait_for_window(self) -> None:
        deadline = trio.current_time() + WINDOW_WAIT_S
        while self.send_window <= 0 and not (self.closed or self.send_closed):
            if trio.current_time() >= deadline:
                raise MuxedStreamError(f"Timed out waiting for window update after {WINDOW_WAIT_S} seconds.")
            self.window_changed = trio.Event()
            with trio.move_on_at(deadline):
                await self.window_changed.wait()

    async def read(self, n: int | None = -1) -> bytes:
        """Up to ``n`` buffered bytes (all of them for -1/None), waiting for some if none are buffered."""
        if n == 0:
            return b""
        conn, sid = self.fast_conn, self.stream_id
        while True:
            buf = conn.stream_buffers.get(sid)
            if buf:
                if n is None or n < 0 or n >= len(buf):
                    data = bytes(buf)
                    buf.clear()
                else:
                    data = pop_head(buf, n)
                if self.closed and not buf:
                    conn._finalize_stream_locked(self, fully_closed=True)
                else:
                    await self._grant(len(buf))
                return data
            if buf is None or self.reset_received:
                if self.reset_received:
                    raise MuxedStreamReset("Stream was reset")
                raise MuxedStreamEOF("Stream is closed")
            if self.recv_closed:
                raise MuxedStreamEOF("Stream is closed for receiving")
            if conn.event_shutting_down.is_set():
                raise MuxedStreamEOF("Connection shut down")
            event = conn.stream_events.get(sid)
            if event is None:
                raise MuxedStreamEOF("Stream was removed during read")
            await event.wait()
            if conn.stream_events.get(sid) is event:
                conn.stream_events[sid] = trio.Event()

    async def _grant(self, buffered: int) -> None:
        """Give the peer back the window it used once a quarter of the offered window is due, doubling the
        offer (up to :data:`RECV_WINDOW`) each time: a bulk stream reaches the full window within a few MB,
        while a stream we barely read (a request) never offers more than the spec's 256 KiB, so a peer can
        make us buffer only what our reader has shown it takes."""
        due = self.granted - (self.recv_window + buffered)
        if due < self.granted // 4 or self.recv_closed or self.closed:
            return
        self.granted = min(2 * self.granted, RECV_WINDOW)
        credit = self.granted - (self.recv_window + buffered)
        self.recv_window += credit
        await self.send_window_update(credit)


class FastYamux(WholeFrameYamux):
    """py-libp2p's yamux connection with our stream class, batched DATA writes (each one whole, see
    :mod:`.compat_frames`) and a total frame reader."""

    async def send_data(self, sid: int, payload: memoryview) -> None:
        """``payload`` as DATA frames of at most :data:`FRAME_PAYLOAD` bytes, in one secured write."""
        pack, size = _HEADER.pack, len(payload)
        frames = [
            pack(0, _y.TYPE_DATA, 0, sid, min(FRAME_PAYLOAD, size - i)) + payload[i : i + FRAME_PAYLOAD]
            for i in range(0, size, FRAME_PAYLOAD)
        ]
        secured = self.secured_conn
        if isinstance(secured, BatchedNoiseSession):
            await self.write_whole(partial(secured.write_messages, frames))
        else:
            await self.write_whole(partial(secured.write, b"".join(frames)))

    async def open_stream(self) -> FastYamuxStream:
        await self.stream_backlog_semaphore.acquire()
        async with self.streams_lock:
            if self.event_shutting_down.is_set():
                self.stream_backlog_semaphore.release()
                raise MuxedStreamError("Connection is shutting down")
            sid = self.next_stream_id
            self.next_stream_id += 2
            stream = FastYamuxStream(sid, self, True)
            stream._owns_backlog_slot = True
            self._register(stream)
        try:
            await self._write_frame(_HEADER.pack(0, _y.TYPE_WINDOW_UPDATE, _y.FLAG_SYN, sid, 0))
        except Exception as exc:
            self.stream_backlog_semaphore.release()
            stream._backlog_slot_released = True
            self._forget(sid)
            raise MuxedStreamError(f"Failed to send SYN: {exc}") from exc
        return stream

    def _register(self, stream: FastYamuxStream) -> None:
        sid = stream.stream_id
        self.streams[sid] = stream
        self.stream_buffers[sid] = bytearray()
        self.stream_events[sid] = trio.Event()

    def _forget(self, sid: int) -> None:
        self.streams.pop(sid, None)
        self.stream_buffers.pop(sid, None)
        self.stream_events.pop(sid, None)

    # --------------------------------------------------------------------------------------- reading
    async def handle_incoming(self) -> None:
        """Read and dispatch frames until the connection ends; a protocol violation closes it (GO_AWAY)."""
        self._reader = trio.lowlevel.current_task()  # its frames are queued, never wait (compat_frames)
        try:
            while not self.event_shutting_down.is_set():
                header = await self._read_exact(HEADER_SIZE)
                version, typ, flags, sid, length = _HEADER.unpack(header)
                if version != 0 or typ > _MAX_TYPE:
                    await self._protocol_error(f"bad header version={version} type={typ}")
                    return
                if typ == _y.TYPE_DATA:
                    if length > MAX_FRAME:
                        await self._protocol_error(f"DATA frame of {length} bytes")
                        return
                    body = await self._read_body(length) if length else b""
                    await self._on_stream_frame(typ, flags, sid, length, body)
                elif typ == _y.TYPE_WINDOW_UPDATE:
                    await self._on_stream_frame(typ, flags, sid, length, b"")
                elif typ == _y.TYPE_PING:
                    if flags & _y.FLAG_SYN:
                        await self._write_frame(_HEADER.pack(0, _y.TYPE_PING, _y.FLAG_ACK, 0, length))
                    elif flags & _y.FLAG_ACK:
                        rtt = trio.current_time() - self._ping_sent_time
                        self._rtt = rtt if self._rtt == 0.0 else (self._rtt + rtt) / 2
                        self._ping_event.set()
                else:  # GO_AWAY: the peer is leaving
                    log.debug("yamux GO_AWAY from %s code=%d", self.peer_id, length)
                    return
        except (IncompleteReadError, trio.TooSlowError) as exc:
            log.debug("yamux connection to %s ended: %s", self.peer_id, exc)
        except Exception as exc:  # the session failed (bad Noise message, reset socket): close
            log.debug("yamux connection to %s failed: %s: %s", self.peer_id, type(exc).__name__, exc)
        finally:
            with trio.CancelScope(shield=True):
                self.event_shutting_down.set()
                streams = list(self.streams.values())
                with trio.move_on_after(5.0):
                    await self._cleanup_on_error()
                for stream in streams:
                    if isinstance(stream, FastYamuxStream):
                        stream.wake_writer()

    async def _read_exact(self, n: int) -> bytes:
        conn: ISecureConn = self.secured_conn
        data = await conn.read(n)
        if len(data) == n:
            return data
        buf = bytearray(data)
        while len(buf) < n:
            more = await conn.read(n - len(buf))
            if not more:
                break
            buf += more
        if len(buf) != n:
            raise IncompleteReadError("connection ended inside a frame", n, len(buf))
        return bytes(buf)

    async def _read_body(self, n: int) -> bytes:
        """A DATA body: bounded in time (a peer that announces a body and stalls loses the connection),
        except when the session already holds it."""
        secured = self.secured_conn
        if isinstance(secured, BatchedNoiseSession) and secured.buffered() >= n:
            return await self._read_exact(n)
        with trio.fail_after(_BODY_TIMEOUT):
            return await self._read_exact(n)

    async def _protocol_error(self, why: str) -> None:
        log.info("yamux protocol violation by %s: %s; closing the connection", self.peer_id, why)
        with trio.move_on_after(1.0):
            try:
                # directly, not queued: the connection closes right after
                goaway = _HEADER.pack(0, _y.TYPE_GO_AWAY, 0, 0, _y.GO_AWAY_PROTOCOL_ERROR)
                await self.write_whole(partial(self.secured_conn.write, goaway))
            except Exception as exc:
                log.debug("GO_AWAY to %s not sent: %s", self.peer_id, exc)

    async def _on_stream_frame(self, typ: int, flags: int, sid: int, length: int, body: bytes) -> None:
        stream = self.streams.get(sid)
        if flags & _y.FLAG_SYN:
            if stream is not None or sid == 0 or (sid % 2 == 1) == self.is_initiator_value:
                # a reused id, or one of ours: refuse that stream, keep the connection
                await self._write_frame(_HEADER.pack(0, _y.TYPE_WINDOW_UPDATE, _y.FLAG_RST, sid, 0))
                return
            stream = FastYamuxStream(sid, self, False)
            self._register(stream)
            self._apply(stream, typ, flags, length, body)
            if flags & _y.FLAG_RST:
                await self.new_stream_send_channel.send(stream)
                return
            await self._write_frame(_HEADER.pack(0, _y.TYPE_WINDOW_UPDATE, _y.FLAG_ACK, sid, 0))
            await self.new_stream_send_channel.send(stream)
            return
        if stream is None or not isinstance(stream, FastYamuxStream):
            return  # a stream already gone (or never ours): its late frames are dropped
        if not self._apply(stream, typ, flags, length, body):
            await self._write_frame(_HEADER.pack(0, _y.TYPE_WINDOW_UPDATE, _y.FLAG_RST, sid, 0))

    def _apply(self, stream: FastYamuxStream, typ: int, flags: int, length: int, body: bytes) -> bool:
        """Apply one frame to ``stream``; False if the peer overran the window we granted (stream reset)."""
        sid, ok = stream.stream_id, True
        event = self.stream_events.get(sid)
        if typ == _y.TYPE_WINDOW_UPDATE:
            if length:
                stream.send_window += length
                stream.wake_writer()
        elif body:
            buf = self.stream_buffers.get(sid)
            if len(body) > stream.recv_window:
                log.info("yamux peer %s overran the window of stream %d: reset", self.peer_id, sid)
                flags |= _y.FLAG_RST
                ok = False
                if buf is not None:
                    buf.clear()
            elif buf is not None and not stream.recv_closed:
                stream.recv_window -= len(body)
                buf += body
        if flags & _y.FLAG_FIN:
            stream.recv_closed = True
            if stream.send_closed:
                stream.closed = True
        if flags & _y.FLAG_RST:
            stream.closed = stream.reset_received = True
            stream.send_closed = stream.recv_closed = True
            stream.wake_writer()
        if event is not None:
            event.set()
        if stream.closed:
            self._finalize_stream_locked(stream, fully_closed=True)
        return ok
