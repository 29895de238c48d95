"""Yamux frame writes that a cancelled caller cannot cut in half (py-libp2p 0.8.1's can, and that breaks the
connection for every stream on it).

All streams of a yamux connection share one byte stream, and the peer finds each frame (and, below it, each
Noise message) by the lengths that precede it. py-libp2p's ``Yamux._write_frame`` writes with an ordinary
cancellable socket ``send_all``: when the task writing is cancelled part-way (a request's timeout, a
response's write deadline, the end of a nursery), part of a frame is on the wire, or a Noise nonce was spent
on a message never sent. From there the peer reads lengths out of payload bytes: every *other* stream of the
connection ends truncated or reset, or waits for bytes that never come until its own timeout. That was the
flake of ``tests/transport/libp2p/test_fast_interop.py`` (twelve parallel ~1.2 MB responses on one connection
under CPU load: one response's write deadline fired mid-frame and every request failed), on the stock path
and on the fast path alike; docs/benchmarks.md, "Parallel streams under CPU load", has the runs.

:class:`WholeFrameYamux` (py-libp2p's ``Yamux`` with this one change; the base of
:class:`~.compat_yamux.FastYamux`, and what runs with ``Libp2pConfig.fast_streams`` off) writes each frame, or
batch of frames, shielded from its caller's cancellation: once a write holds the connection's write lock it
ends whole, and the caller's cancellation takes effect right after it, at a frame boundary, so only the
caller's own stream is abandoned (its reset follows). The shield is bounded: a write still unfinished
:data:`FRAME_WRITE_GRACE_S` after its caller's deadline, or :data:`FRAME_WRITE_LIMIT_S` after it started, is
cut, and the connection, whose framing is then lost, is closed at once; closing the connection cuts a write
in progress too (nothing more will be read from it).

Why a write could stall that long at all: py-libp2p's frame reader answers a PING, a new stream's SYN or a bad
frame by writing a frame itself, and so waits for the connection's write lock. When a writer holding it is
blocked in ``send_all`` because the peer's socket buffer is full, and the peer's reader is waiting for *its*
write lock the same way, neither side reads again: a deadlock (seen in the same runs; before the fix above,
the response's write deadline ended it by cutting the frame).
Here the reader never waits for the write lock: the frames it writes are queued (at most
:data:`READER_QUEUE` of them; past that it waits, so a peer flooding PINGs is slowed down, not buffered
for) and go out ahead of the next write, or from a task of the connection's own.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

import trio
from libp2p.abc import INetwork, ISecureConn
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.stream_muxer.yamux import yamux as _y
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2pfl.transport.libp2p.compat import UnsupportedLibp2pError

__all__ = ["FRAME_WRITE_GRACE_S", "FRAME_WRITE_LIMIT_S", "READER_QUEUE", "WholeFrameYamux", "use_yamux"]

log = logging.getLogger("p2pfl.transport.libp2p")

#: How long a frame write may run on after its caller's deadline passed.
FRAME_WRITE_GRACE_S: Final[float] = 5.0
#: The longest a frame write may take at all: as long as a peer has to deliver a DATA body to us (60 s).
FRAME_WRITE_LIMIT_S: Final[float] = _y._yamux_data_read_timeout()
#: Frames the reader may have waiting to be written (ACKs, PING replies, RSTs: 12 bytes each).
READER_QUEUE: Final[int] = 256

if not all(hasattr(Yamux, name) for name in ("_write_frame", "close")):
    raise UnsupportedLibp2pError("py-libp2p yamux without Yamux._write_frame or Yamux.close")


class WholeFrameYamux(Yamux):
    """py-libp2p's yamux connection whose frame writes are never cut by their caller's cancellation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, kind in (("_write_lock", trio.Lock), ("_nursery", type(None))):
            if not isinstance(getattr(self, name, False), kind):
                raise UnsupportedLibp2pError(f"py-libp2p yamux without a Yamux.{name}")
        self._writing: trio.CancelScope | None = None
        self._reader: trio.lowlevel.Task | None = None  # the task running handle_incoming
        self._from_reader: deque[bytes] = deque()
        self._flushing = False
        self._closing = False  # close() began: nothing written from now on needs protecting

    async def handle_incoming(self) -> None:
        self._reader = trio.lowlevel.current_task()
        await super().handle_incoming()

    async def _write_frame(self, data: bytes) -> None:
        nursery = self._nursery
        if (
            trio.lowlevel.current_task() is self._reader
            and nursery is not None
            and len(self._from_reader) < READER_QUEUE
        ):
            self._from_reader.append(data)  # the reader must not wait for the write lock (deadlock)
            if not self._flushing:
                self._flushing = True
                nursery.start_soon(self._flush_reader_frames)
            return
        await self.write_whole(partial(self.secured_conn.write, data))
        await trio.lowlevel.checkpoint()  # as py-libp2p's: a caller cancelled meanwhile stops here

    async def _flush_reader_frames(self) -> None:
        try:
            while self._from_reader:  # frames queued while a write was under way wait for the next
                await self.write_whole(trio.lowlevel.checkpoint)  # the queued frames go out first
        except Exception as exc:  # the connection is failing: its reader cleans up
            log.debug("yamux frames to %s not sent: %s: %s", self.peer_id, type(exc).__name__, exc)
        finally:
            self._flushing = False

    async def write_whole(self, write: Callable[[], Awaitable[None]]) -> None:
        """Run ``write`` (one secured write: whole frames) under the connection's write lock, to its end
        unless it overruns its bounds (then the connection is closed: see the module docstring)."""
        async with self._write_lock:
            now = trio.current_time()
            caller = max(trio.current_effective_deadline(), now)
            if self._closing:  # the GO_AWAY, or a write racing it: no grace, bounded even without a deadline
                deadline = min(caller, now + FRAME_WRITE_GRACE_S)
            else:
                deadline = min(caller + FRAME_WRITE_GRACE_S, now + FRAME_WRITE_LIMIT_S)
            with trio.CancelScope(deadline=deadline, shield=True) as scope:
                self._writing = scope
                try:
                    if self._from_reader:
                        queued = b"".join(self._from_reader)
                        self._from_reader.clear()
                        await self.secured_conn.write(queued)
                    await write()
                finally:
                    self._writing = None
            if scope.cancelled_caught:
                await self._close_torn()
                raise MuxedStreamError("a frame write was cut off: the connection is closed")

    async def _close_torn(self) -> None:
        """Close the secured connection: its reader then fails and cleans every stream up."""
        log.info("yamux write to %s cut off mid-frame; closing the connection", self.peer_id)
        with trio.CancelScope(deadline=trio.current_time() + FRAME_WRITE_GRACE_S, shield=True):
            try:
                await self.secured_conn.close()
            except Exception as exc:
                log.debug("closing %s after a cut write: %s: %s", self.peer_id, type(exc).__name__, exc)

    async def close(self, error_code: int = _y.GO_AWAY_NORMAL) -> None:
        """Cut a write in progress first: the connection is going, and a peer that does not read would
        otherwise hold the GO_AWAY (and this close) behind it. The GO_AWAY itself, and any write after it,
        ends by the caller's deadline (at most :data:`FRAME_WRITE_GRACE_S`): a frame cut now breaks nothing,
        as the socket closes right after, while the grace made a shutdown wait 5 s longer per peer that does
        not read, or 60 s when closed without a deadline."""
        self._closing = True
        if self._writing is not None:
            self._writing.cancel()
        await super().close(error_code)


def use_yamux(network: INetwork, muxer: type[WholeFrameYamux]) -> None:
    """Make every yamux connection of ``network`` a ``muxer``.

    py-libp2p's muxer negotiation builds its own ``Yamux`` for ``/yamux/1.0.0`` whatever class the host was
    given, so the negotiated (not yet started) connection is rebuilt as ``muxer`` with the same arguments."""
    multistream = network.upgrader.muxer_multistream  # type: ignore[attr-defined]
    inner = multistream.new_conn

    async def new_conn(conn: ISecureConn, peer_id: ID) -> Any:
        muxed = await inner(conn, peer_id)
        if type(muxed) is not Yamux:
            return muxed
        ours = muxer(conn, peer_id, is_initiator=muxed.is_initiator_value, on_close=muxed.on_close)
        for attr in ("negotiated_muxer_protocol", "negotiated_security_protocol"):
            if hasattr(muxed, attr):
                setattr(ours, attr, getattr(muxed, attr))
        return ours

    multistream.new_conn = new_conn
