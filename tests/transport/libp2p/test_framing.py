"""The requester's side of the stream framing against a hostile responder (a bare py-libp2p host, loopback).

Every malformed response ends as one ``TransportError`` subclass whose ``reason`` names the class of failure
(the peer counts fetch failures by it); nothing is allocated before the declared length is checked; the
transport keeps serving afterwards.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol

from p2pfl.errors import ProtocolViolationError, RequestTimeoutError, ResponseTooLargeError, TransportError
from tests.transport.libp2p.test_transport import raw_host, transports


async def _read_request(stream: INetStream) -> bytes:
    size = int.from_bytes(await stream.read(8), "big")
    return await stream.read(size) if size else b""


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(8, "big") + body


#: protocol -> what the hostile responder writes after reading the request (None: stall)
RESPONSES: dict[str, bytes | None] = {
    "/truncated/1": (100).to_bytes(8, "big") + b"\x00only ten.",
    "/truncated-prefix/1": b"\x00\x00\x01",
    "/oversize/1": (2**63).to_bytes(8, "big"),
    "/max-prefix/1": b"\xff" * 8,
    "/status/1": _frame(b"\x07garbage status"),
    "/empty/1": _frame(b""),
    "/stall/1": None,
    "/prefix-then-stall/1": (5).to_bytes(8, "big"),
}
EXPECTED: dict[str, type[TransportError]] = {
    "/truncated/1": ProtocolViolationError,
    "/truncated-prefix/1": ProtocolViolationError,
    "/oversize/1": ResponseTooLargeError,
    "/max-prefix/1": ResponseTooLargeError,
    "/status/1": ProtocolViolationError,
    "/empty/1": ProtocolViolationError,
    "/stall/1": RequestTimeoutError,
    "/prefix-then-stall/1": RequestTimeoutError,
}


def _responder(response: bytes | None) -> Callable[[INetStream], Awaitable[None]]:
    async def handle(stream: INetStream) -> None:
        await _read_request(stream)
        if response is not None:
            await stream.write(response)
        if response is None or response == RESPONSES["/prefix-then-stall/1"]:
            await trio.sleep(10)  # hold the stream open: only the requester's timeout ends it
        else:
            await stream.close()  # a truncated frame then meets EOF

    return handle


@pytest.mark.parametrize("protocol", sorted(RESPONSES))
async def test_each_malformed_response_is_one_transport_error_with_its_reason(protocol: str) -> None:
    async with transports(1) as (a,):
        async with raw_host(61, a) as evil:
            evil.set_stream_handler(TProtocol(protocol), _responder(RESPONSES[protocol]))
            evil.set_stream_handler(TProtocol("/ok/1"), _ok)
            pid = str(evil.get_id())
            with trio.fail_after(10), pytest.raises(TransportError) as info:
                await a.request(pid, protocol, b"req", max_response=1 << 20, timeout=1.0)
            assert EXPECTED[protocol] is type(info.value), info.value
            assert EXPECTED[protocol].reason == info.value.reason
            # the transport and the connection still work
            with trio.fail_after(10):
                assert b"pong" == await a.request(pid, "/ok/1", b"ping", max_response=100, timeout=5)
        assert 1 == a.stats.requests_failed


async def _ok(stream: INetStream) -> None:
    await _read_request(stream)
    await stream.write(_frame(b"\x00pong"))
    await stream.close()


async def test_an_error_status_is_unavailable_and_its_text_is_bounded() -> None:
    async with transports(1) as (a,), raw_host(62, a) as evil:
        evil.set_stream_handler(TProtocol("/err/1"), _responder(_frame(b"\x01" + b"x" * 100_000)))
        with trio.fail_after(10), pytest.raises(TransportError) as info:
            await a.request(str(evil.get_id()), "/err/1", b"", max_response=1 << 20, timeout=5)
        assert TransportError is type(info.value)
        assert "unavailable" == info.value.reason
        assert len(str(info.value)) < 1500
