"""Crafted hostile inputs for handler tests: the two concrete remote-crash triggers of issue 13 and helpers.

* :func:`bytes_key_envelope`: an envelope whose header map has a bytes-typed key next to an unknown string key
  (sorting the unknown keys mixed bytes and str: ``TypeError`` before the signature check, so it needs no
  valid key);
* :func:`huge_shape_payload`: a payload whose first tensor has shape ``[0, 2**63]`` (zero elements, so every
  element-count cap passes; numpy refuses the shape with ``ValueError``), optionally padded to an exact size
  so a delta carrying it passes the declared-size check, and validly signed by :func:`signed`.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack

from p2pfl.identity import Identity
from p2pfl.wire import ZERO_DIGEST, Header, digest, seal

#: the shape that numpy refuses (``ValueError: Maximum allowed dimension exceeded``)
HUGE_SHAPE = [0, 2**63]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def frame(header_bytes: bytes, signature: bytes, payload: bytes | None) -> bytes:
    """An envelope from its parts, without ``seal``'s checks."""
    return (
        b"\x94\x01" + pack(header_bytes) + pack(signature) + (b"\xc0" if payload is None else pack(payload))
    )


def header_for(
    identity: Identity,
    network_id: str,
    payload: bytes,
    *,
    kind: str = "delta",
    seq: int = 1,
    base: bytes = ZERO_DIGEST,
    arch: bytes = ZERO_DIGEST,
    result: bytes | None = None,
    timestamp_ms: int | None = None,
) -> Header:
    """A header describing ``payload``, stamped now by default: a gossiped delta is judged by its signed
    timestamp before its signature (p2pfl.protocol.freshness), and these are hostile in other ways."""
    return Header(
        kind=kind,
        network_id=network_id,
        sender=identity.peer_id,
        seq=seq,
        base=ZERO_DIGEST if kind == "snapshot" else base,
        result=result if result is not None else digest(b"result" + payload[:32]),
        arch=arch,
        payload_digest=digest(payload),
        payload_size=len(payload),
        codec="raw",
        timestamp_ms=int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
    )


def signed(identity: Identity, header: Header, payload: bytes, *, inline: bool = True) -> bytes:
    """A validly signed envelope (``seal`` checks only that the header describes the payload)."""
    return seal(identity, header, payload if inline else None)


def bytes_key_envelope(identity: Identity, network_id: str, *, kind: str = "snapshot") -> bytes:
    """Trigger (a): header map = a valid header plus ``{b"\\x00": 0, "zz_unknown": 0}``; garbage signature."""
    payload = pack([["b", "float32", [1], b"\x00" * 4]])
    raw = header_for(identity, network_id, payload, kind=kind).to_wire()
    raw_any: dict[Any, Any] = dict(raw)
    raw_any[b"\x00"] = 0
    raw_any["zz_unknown"] = 0
    return frame(pack(raw_any), b"\x00" * 64, payload)


def huge_shape_payload(size: int | None = None) -> bytes:
    """Trigger (b)'s payload: ``[["a", "float32", [0, 2**63], b""], ...]``, padded to ``size`` bytes if given
    (by a second tensor ``"zz"`` whose bytes are never reached: decoding fails on the first)."""
    bad = ["a", "float32", HUGE_SHAPE, b""]
    plain = pack([bad])
    if size is None:
        return plain
    for pad in range(max(0, size - len(plain) - 32), size + 1):
        candidate = pack([bad, ["zz", "float32", [pad], b"\x00" * pad]])
        if len(candidate) == size:
            return candidate
    raise ValueError(f"cannot pad the payload to {size} bytes")
