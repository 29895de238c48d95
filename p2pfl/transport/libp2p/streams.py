"""Request/response over libp2p streams: one length-prefixed frame each way, bounded in count, size and time.

A request is one frame (``u64`` big-endian length, then the body); the response is one frame whose first
byte is a status (:data:`STATUS_OK` or :data:`STATUS_ERROR` followed by an error text). Every malformed
response ends as a ``TransportError`` subclass naming the failure; a declared length is checked before any
body is read.
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Final

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2pfl.errors import (
    P2PFLError,
    ProtocolViolationError,
    RequestTimeoutError,
    ResponseTooLargeError,
    TransportError,
)
from p2pfl.transport.base import RequestHandler, TransportStats
from p2pfl.transport.libp2p.config import Libp2pConfig

log = logging.getLogger("p2pfl.transport.libp2p")

HEADER: Final = 8  # big-endian u64 frame length
STATUS_OK: Final = 0
STATUS_ERROR: Final = 1
MAX_ERROR_TEXT: Final = 1024


class FrameTooLarge(Exception):
    """A frame declared more bytes than the reader accepts (internal: mapped to a ``TransportError``)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


#: Reads shorter than this are gathered before they join the list of parts (bounds the parts' overhead).
_PART: Final = 1 << 16


async def read_exactly(stream: INetStream, n: int) -> bytes:
    """``stream.read(n)`` may return fewer bytes: loop until ``n`` arrived (EOF: a truncated frame).

    The parts are joined once at the end: one allocation and one copy of the payload (a preallocated
    buffer copied into ``bytes`` cost two, 88 against 40 ms for 64 MiB here). Reads shorter than 64 KiB are
    gathered first, so a sender of tiny frames cannot make the list cost more than the payload."""
    first = await _read_some(stream, n, 0)
    if len(first) == n:
        return first
    parts = [first]
    small = bytearray()
    got = len(first)
    while got < n:
        chunk = await _read_some(stream, n, got)
        got += len(chunk)
        if len(chunk) >= _PART and not small:
            parts.append(chunk)
            continue
        small += chunk
        if len(small) >= _PART:
            parts.append(bytes(small))
            small.clear()
    parts.append(bytes(small))
    return b"".join(parts)


async def _read_some(stream: INetStream, n: int, got: int) -> bytes:
    try:
        chunk = await stream.read(n - got)
    except EOFError:  # py-libp2p's StreamEOF: the remote closed its side
        chunk = b""
    if not chunk:
        raise ProtocolViolationError(f"stream ended after {got} of {n} bytes (truncated frame)")
    if len(chunk) > n - got:  # a stream must not return more than asked; never trust it to
        raise ProtocolViolationError(f"stream returned {len(chunk)} bytes where {n - got} were asked")
    return chunk


async def read_frame_size(stream: INetStream, limit: int) -> int:
    """Read a frame's length prefix; ``FrameTooLarge`` if it declares more than ``limit`` bytes."""
    size = int.from_bytes(await read_exactly(stream, HEADER), "big")
    if size > limit:
        raise FrameTooLarge(size)
    return size


async def read_frame(stream: INetStream, limit: int) -> bytes:
    """Read one length-prefixed frame; the declared length is checked before any body is read."""
    size = await read_frame_size(stream, limit)
    return await read_exactly(stream, size) if size else b""


async def write_frame(stream: INetStream, parts: list[bytes], chunk: int) -> None:
    """Write ``len(b"".join(parts))`` then the parts, in writes of at most ``chunk`` bytes."""
    size = sum(len(p) for p in parts)
    header = size.to_bytes(HEADER, "big")
    if size + HEADER <= chunk:
        await stream.write(b"".join([header, *parts]))
        return
    await stream.write(header)
    for part in parts:
        view = memoryview(part)
        for off in range(0, len(part), chunk):
            # a view, not a copy: yamux slices it into frames itself (py-libp2p's and ours accept views)
            await stream.write(view[off : off + chunk])  # type: ignore[arg-type]


def cause_chain(exc: BaseException, depth: int = 4) -> str:
    """``Type: message`` of an exception and its causes: libp2p wraps the reason a stream failed."""
    parts: list[str] = []
    cur: BaseException | None = exc
    while cur is not None and len(parts) < depth:
        parts.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or cur.__context__
    return " <- ".join(parts)


def cleanup_scope(seconds: float) -> trio.CancelScope:
    """A shielded but bounded scope for cleanup (see ``Libp2pConfig.cleanup_s``)."""
    return trio.CancelScope(deadline=trio.current_time() + seconds, shield=True)


async def reset_quietly(stream: INetStream, seconds: float) -> None:
    """Reset ``stream`` within ``seconds``; a stream already dead is no error."""
    with cleanup_scope(seconds), suppress(Exception):
        await stream.reset()


class StreamsMixin:
    """Request protocols of :class:`~p2pfl.transport.libp2p.Libp2pTransport`: serve and send requests."""

    _config: Libp2pConfig
    _stats: TransportStats
    _host: IHost
    _handlers: dict[str, RequestHandler]
    #: requests in flight: token -> (peer id, when it is overdue); see ``ConnectionsMixin._abort_stuck``
    _inflight: dict[int, tuple[str, float]]
    _next_token: int
    _inbound: dict[str, int]
    _inbound_total: int

    if TYPE_CHECKING:

        def _require_running(self) -> None: ...
        def _parse_peer(self, peer_id: str) -> ID: ...
        def _peer_allowed(self, peer_id: str) -> bool: ...
        def _known_addrs(self, pid: ID) -> list[multiaddr.Multiaddr]: ...
        def _overdue_after(self) -> float: ...

    async def _reset_quietly(self, stream: INetStream) -> None:
        await reset_quietly(stream, self._config.cleanup_s)

    def set_request_handler(self, protocol: str, handler: RequestHandler) -> None:
        if not protocol.startswith("/"):
            raise TransportError(f"protocol id must start with '/': {protocol!r}")
        self._handlers[protocol] = handler
        self._host.set_stream_handler(TProtocol(protocol), partial(self._serve, protocol))

    async def request(
        self, peer_id: str, protocol: str, data: bytes, *, max_response: int, timeout: float
    ) -> bytes:
        started = time.perf_counter()
        try:
            body = await self._request(peer_id, protocol, data, max_response=max_response, timeout=timeout)
        except TransportError:
            self._stats.requests_failed += 1
            self._stats.observe_request(protocol, started, False)
            raise
        self._stats.observe_request(protocol, started, True)
        return body

    async def _request(
        self, peer_id: str, protocol: str, data: bytes, *, max_response: int, timeout: float
    ) -> bytes:
        self._require_running()
        if len(data) > self._config.max_request_bytes:
            raise TransportError(
                f"request of {len(data)} bytes exceeds max_request_bytes={self._config.max_request_bytes}"
            )
        pid = self._parse_peer(peer_id)
        if not self._peer_allowed(peer_id):
            raise TransportError(f"peer {peer_id} is refused by the peer filter or blocked")
        if not self._host.get_network().get_connections(pid) and not self._known_addrs(pid):
            raise TransportError(f"peer {peer_id} is unknown: not connected and no address known")
        what = f"request to {peer_id} over {protocol}"
        token = self._next_token = self._next_token + 1
        self._inflight[token] = (peer_id, trio.current_time() + timeout + self._overdue_after())
        try:
            return await self._request_on(
                pid, protocol, data, what=what, max_response=max_response, timeout=timeout
            )
        finally:
            del self._inflight[token]

    async def _request_on(
        self, pid: ID, protocol: str, data: bytes, *, what: str, max_response: int, timeout: float
    ) -> bytes:
        stream: INetStream | None = None
        try:
            with trio.fail_after(timeout):
                try:
                    stream = await self._host.new_stream(pid, [TProtocol(protocol)])
                except Exception as exc:
                    raise TransportError(
                        f"{what}: cannot open stream (peer unreachable or protocol unsupported): "
                        f"{cause_chain(exc)}"
                    ) from exc
                await write_frame(stream, [data], self._config.write_chunk)
                self._stats.add_sent(protocol, len(data))
                try:
                    size = await read_frame_size(stream, max_response + 1)
                except FrameTooLarge as exc:
                    raise ResponseTooLargeError(
                        f"{what}: response of {exc.size - 1} bytes exceeds max_response={max_response}"
                    ) from exc
                # the status byte apart from the body: slicing it off afterwards copied the whole body
                status = (await read_exactly(stream, 1))[0] if size else None
                body = await read_exactly(stream, size - 1) if size > 1 else b""
        except trio.TooSlowError as exc:
            if stream is not None:
                await self._reset_quietly(stream)
            raise RequestTimeoutError(f"{what} timed out after {timeout} s") from exc
        except TransportError:
            if stream is not None:
                await self._reset_quietly(stream)
            raise
        except Exception as exc:
            if stream is not None:
                await self._reset_quietly(stream)
            raise TransportError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
        with cleanup_scope(self._config.cleanup_s), suppress(Exception):
            await stream.close()
        if status is None:
            raise ProtocolViolationError(f"{what}: empty response frame (no status byte)")
        self._stats.add_received(protocol, len(body))
        if status == STATUS_OK:
            return body
        if status == STATUS_ERROR:
            text = body[:MAX_ERROR_TEXT].decode("utf-8", "replace")
            raise TransportError(f"{what}: remote handler failed: {text}")
        raise ProtocolViolationError(f"{what}: unknown response status byte {status}")

    async def _serve(self, protocol: str, stream: INetStream) -> None:
        """Serve one inbound request: bounded count, size and time; handler errors become error frames."""
        cfg = self._config
        pid = str(stream.muxed_conn.peer_id)
        if not self._peer_allowed(pid):
            self._stats.drop("peer_filter")
            await self._reset_quietly(stream)
            return
        if self._inbound.get(pid, 0) >= cfg.max_inbound_streams_per_peer or (
            self._inbound_total >= cfg.max_inbound_streams
        ):
            self._stats.drop("inbound_stream_limit")
            await self._reset_quietly(stream)
            return
        self._inbound[pid] = self._inbound.get(pid, 0) + 1
        self._inbound_total += 1
        try:
            await self._serve_one(protocol, pid, stream)
        finally:
            self._inbound_total -= 1
            left = self._inbound[pid] - 1
            if left:
                self._inbound[pid] = left
            else:
                del self._inbound[pid]

    async def _serve_one(self, protocol: str, pid: str, stream: INetStream) -> None:
        cfg = self._config
        try:
            with trio.fail_after(cfg.request_read_timeout):
                request = await read_frame(stream, cfg.max_request_bytes)
        except trio.TooSlowError:
            self._stats.drop("request_read_timeout")
            self._stats.requests_failed += 1
            await self._reset_quietly(stream)
            return
        except FrameTooLarge:
            self._stats.drop("request_too_large")
            self._stats.requests_failed += 1
            await self._reset_quietly(stream)
            return
        except Exception:
            self._stats.drop("request_stream_error")
            await self._reset_quietly(stream)
            return
        self._stats.add_received(protocol, len(request))
        status, body = await self._handle(protocol, pid, request)
        try:
            with trio.fail_after(cfg.io_grace + len(body) / cfg.min_write_rate):
                await write_frame(stream, [bytes([status]), body], cfg.write_chunk)
                await stream.close()
        except Exception:
            self._stats.drop("response_write_failed")
            self._stats.requests_failed += 1
            await self._reset_quietly(stream)
            return
        if status == STATUS_OK:
            self._stats.requests_served += 1
            self._stats.add_sent(protocol, len(body))
        else:
            self._stats.requests_failed += 1

    async def _handle(self, protocol: str, pid: str, request: bytes) -> tuple[int, bytes]:
        """Run the handler of ``protocol``: (status, body); its failures become an error text, never raise."""
        cfg = self._config
        handler = self._handlers.get(protocol)
        try:
            if handler is None:
                raise TransportError(f"no handler for {protocol}")
            with trio.fail_after(cfg.handler_timeout):
                body = await handler(pid, request)
            if not isinstance(body, bytes | bytearray | memoryview):
                raise TypeError(f"handler returned {type(body).__name__}, not bytes")
            return STATUS_OK, bytes(body)
        except trio.TooSlowError:
            return STATUS_ERROR, f"handler timed out after {cfg.handler_timeout} s".encode()
        except Exception as exc:
            if isinstance(exc, P2PFLError):  # an expected refusal (unknown digest): the requester is told
                log.debug("request handler for %s refused peer=%s: %s", protocol, pid, exc)
            else:  # a bug of ours: one line, the stream closes with an error frame, the host keeps serving
                log.error(
                    "request handler for %s failed peer=%s error=%s: %s",
                    protocol,
                    pid,
                    type(exc).__name__,
                    exc,
                )
                log.debug("traceback of the failed %s handler", protocol, exc_info=exc)
            return STATUS_ERROR, f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:MAX_ERROR_TEXT]
