"""A Noise transport session that batches: the wire format of libp2p Noise, fewer syscalls and copies.

py-libp2p 0.8.1's ``SecureSession`` reads every Noise message with two exact reads of the raw connection (a
2-byte length, then the body), each a socket ``recv`` behind a trio lock, and writes every message with its
own ``send``; a yamux frame of 64 KiB (12-byte header + 65,524 bytes) is also one byte too many for the
65,519-byte Noise plaintext limit, so it travels as two messages (65,519 + 17 bytes). Profiled on the
payload benchmark, that framing was about a third of each process's CPU.

:class:`BatchedNoiseSession` speaks exactly the same wire format (``u16`` big-endian length, then a
ChaCha20-Poly1305 ciphertext of at most 65,535 bytes, nonces counted by the handshake's own cipher states)
but reads the socket in large chunks and decrypts every whole message it holds, and seals a list of
messages into one socket write (:meth:`BatchedNoiseSession.write_messages`). A peer running stock
py-libp2p, or any other libp2p Noise implementation, sees no difference.

Everything received is hostile until authenticated: a message that fails authentication, or a stream that
ends inside a message, fails the session for good with :class:`NoiseFrameError` (a ``TransportError`` and a
py-libp2p ``IOException``, so the muxer above closes the connection); nothing else escapes, and the
buffers are bounded by one read chunk plus one message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NoReturn

import trio
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.io.exceptions import IncompleteReadError, IOException
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH, NoiseTransportReadWriter
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.secure_session import SecureSession

from p2pfl.errors import TransportError
from p2pfl.transport.libp2p.compat import UnsupportedLibp2pError

__all__ = [
    "MAX_PLAINTEXT",
    "RECV_CHUNK",
    "BatchedNoiseSession",
    "BatchedNoiseTransport",
    "NoiseFrameError",
    "batched_session",
]

#: Largest plaintext per Noise message (65,535 minus the 16-byte Poly1305 tag), as go-libp2p and py-libp2p.
MAX_PLAINTEXT: Final[int] = MAX_PLAINTEXT_LENGTH
#: Bytes asked of the socket per read: several whole messages at a time.
RECV_CHUNK: Final[int] = 1 << 18
_LEN: Final = 2
_TAG: Final = 16


class NoiseFrameError(TransportError, IOException):
    """A Noise message failed authentication or the connection ended inside one: the session is dead."""

    reason = "noise_frame"


def _check_supported() -> None:
    """The cipher-state attributes read below exist on the installed ``noiseprotocol`` (checked at import)."""
    from noise.state import CipherState  # type: ignore[import-untyped]

    for name in ("encrypt_with_ad", "decrypt_with_ad"):
        if not hasattr(CipherState, name):
            raise UnsupportedLibp2pError(f"noiseprotocol without CipherState.{name}")


_check_supported()


class BatchedNoiseSession(SecureSession):
    """Noise transport messages over a raw connection, read in chunks and written in batches."""

    def __init__(self, session: SecureSession, rw: NoiseTransportReadWriter) -> None:
        super().__init__(
            local_peer=session.local_peer,
            local_private_key=session.local_private_key,
            remote_peer=session.remote_peer,
            remote_permanent_pubkey=session.remote_permanent_pubkey,
            is_initiator=session.is_initiator,
            conn=rw,
        )
        self._raw = rw.read_writer.read_write_closer
        protocol = rw.noise_state.noise_protocol
        if protocol is None:  # the handshake finished, so it is set; the library types it Optional
            raise TransportError("noise session without cipher states")
        self._seal = protocol.cipher_state_encrypt.encrypt_with_ad
        self._open = protocol.cipher_state_decrypt.decrypt_with_ad
        self._cipher = bytearray()  # received, not yet a whole message
        self._plain = bytearray()  # decrypted, not yet read
        self._failed: NoiseFrameError | None = None
        self._send_lock = trio.Lock()  # a nonce per message: encrypt and send in one order

    # ------------------------------------------------------------------------------------------- reading
    def buffered(self) -> int:
        """Plaintext bytes a ``read`` can return without waiting."""
        return len(self._plain)

    async def read(self, n: int | None = None) -> bytes:
        """Up to ``n`` bytes (all buffered plaintext when ``n`` is None); exactly ``n`` unless the
        connection ends first. At a clean end with nothing read: ``IncompleteReadError`` (0 bytes)."""
        if n == 0:
            return b""
        plain = self._plain
        while not plain or (n is not None and len(plain) < n):
            if not await self._receive():
                break
        if not plain:
            raise IncompleteReadError("connection closed", expected_bytes=n or 0, received_bytes=0)
        if n is None or n >= len(plain):
            data = bytes(plain)
            plain.clear()
        else:
            data = pop_head(plain, n)
        return data

    async def _receive(self) -> bool:
        """Read one chunk and decrypt every whole message in it; False at a clean end of the connection."""
        if self._failed is not None:
            raise NoiseFrameError(str(self._failed))  # a fresh one: re-raising one object grows its traceback
        try:
            chunk = await self._raw.read(RECV_CHUNK)
        except IncompleteReadError:
            chunk = b""
        if not chunk:
            if self._cipher:
                held = len(self._cipher)
                self._cipher.clear()
                self._fail(f"connection ended inside a Noise message ({held} bytes held)")
            return False
        buf = self._cipher
        buf += chunk
        pos, end, failure = 0, len(buf), None
        with memoryview(buf) as view:
            while end - pos >= _LEN:
                size = (buf[pos] << 8) | buf[pos + 1]
                if end - pos - _LEN < size:
                    break
                if size < _TAG:
                    failure = f"Noise message of {size} bytes is shorter than its tag"
                    break
                try:
                    plain = self._open(None, view[pos + _LEN : pos + _LEN + size])
                except Exception as exc:  # InvalidTag, a depleted nonce: the session cannot go on
                    failure = f"Noise message failed authentication: {type(exc).__name__}"
                    break
                self._plain += plain
                pos += _LEN + size
        if failure is None:
            del buf[:pos]
            return True
        # What was authentic before the bad message is still read; the next read raises.
        buf.clear()
        self._failed = NoiseFrameError(failure)
        if not self._plain:
            raise NoiseFrameError(failure)
        return True

    def _fail(self, why: str) -> NoReturn:
        self._failed = NoiseFrameError(why)
        raise NoiseFrameError(why)

    # ------------------------------------------------------------------------------------------- writing
    async def write(self, data: bytes) -> None:
        """Encrypt ``data`` as messages of at most :data:`MAX_PLAINTEXT` bytes, sent in one write."""
        view = memoryview(data)
        await self.write_messages([view[i : i + MAX_PLAINTEXT] for i in range(0, len(view), MAX_PLAINTEXT)])

    async def write_messages(self, messages: Sequence[bytes | memoryview]) -> None:
        """One Noise message per item (each at most :data:`MAX_PLAINTEXT` bytes), in one socket write."""
        parts: list[bytes] = []
        async with self._send_lock:
            for msg in messages:
                if len(msg) > MAX_PLAINTEXT:
                    raise TransportError(f"Noise message of {len(msg)} bytes exceeds {MAX_PLAINTEXT}")
                sealed = self._seal(None, msg)
                parts.append(len(sealed).to_bytes(_LEN, "big"))
                parts.append(sealed)
            await self._raw.write(b"".join(parts))


def pop_head(buf: bytearray, n: int) -> bytes:
    """The first ``n`` bytes of ``buf`` as bytes, removed from it: one copy (``bytes(buf[:n])`` makes two)."""
    with memoryview(buf) as view:
        data = bytes(view[:n])
    del buf[:n]
    return data


def batched_session(session: ISecureConn) -> ISecureConn:
    """``session`` as a :class:`BatchedNoiseSession` when it is py-libp2p's Noise session (else as it is).

    Called right after the handshake, before anything else has read the connection: the handshake reads
    exact lengths, so no transport bytes are buffered anywhere yet."""
    if type(session) is SecureSession and isinstance(session.conn, NoiseTransportReadWriter):
        return BatchedNoiseSession(session, session.conn)
    return session


class BatchedNoiseTransport(NoiseTransport):
    """py-libp2p's Noise XX transport whose sessions are :class:`BatchedNoiseSession`."""

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        return batched_session(await super().secure_inbound(conn))

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        return batched_session(await super().secure_outbound(conn, peer_id))
