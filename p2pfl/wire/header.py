"""The signed header: its values (:class:`Meta`, :class:`Header`) and their one canonical encoding.

``header`` is a canonical msgpack map, carried as opaque bytes in the envelope and signed by the sender.
Decoding checks, in order: msgpack form, str keys, missing then unknown fields, field types, the values'
own rules (the constructors), then that the bytes are the canonical encoding of the decoded header.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Final

from p2pfl.errors import IdentityError
from p2pfl.identity import public_key_from_peer_id
from p2pfl.wire.canonical import _pack, _unpack
from p2pfl.wire.codecs import CODECS, is_codec
from p2pfl.wire.errors import (
    MissingFieldError,
    NonCanonicalError,
    NonFiniteError,
    SchemaError,
    UnknownFieldError,
    WrongTypeError,
)
from p2pfl.wire.limits import DEFAULT_LIMITS, Limits
from p2pfl.wire.tensors import DIGEST_SIZE, ZERO_DIGEST

KINDS: Final = ("delta", "snapshot")
_NETWORK_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_UINT64: Final = (1 << 64) - 1

HEADER_FIELDS: Final = frozenset(
    {
        "arch",
        "base",
        "codec",
        "kind",
        "meta",
        "net",
        "payload_digest",
        "payload_size",
        "result",
        "sender",
        "seq",
        "ts",
    }
)
META_FIELDS: Final = frozenset({"loss", "round", "samples"})
#: header fields that may be absent (an envelope from a peer that predates them still decodes)
OPTIONAL_HEADER_FIELDS: Final = frozenset({"dp"})
#: the keys of the ``dp`` map, all required when it is present
DP_FIELDS: Final = frozenset({"clip", "delta", "eps", "mode", "sigma"})
DP_MODES: Final = ("record", "peer")


@dataclass(frozen=True)
class DPClaim:
    """The differential-privacy parameters a sender claims for a version (docs/privacy.md): its ``mode``
    (``record`` or ``peer``), the epsilon it has spent up to and including this version at ``delta``, and its
    noise multiplier and clipping norm. Signed with the header, so neighbours and audits can see what each
    contribution claimed; a receiver cannot check the claim from the model."""

    mode: str
    epsilon: float
    delta: float
    noise_multiplier: float
    clip_norm: float

    def __post_init__(self) -> None:
        if self.mode not in DP_MODES:
            raise SchemaError(f"dp.mode must be one of {DP_MODES}, got {self.mode!r}")
        for name in ("epsilon", "delta", "noise_multiplier", "clip_norm"):
            value = getattr(self, name)
            if type(value) is not float:
                raise WrongTypeError(f"dp.{name} must be a float, got {value!r}")
            if not math.isfinite(value):
                raise NonFiniteError(f"dp.{name} must be finite, got {value!r}")
        if self.epsilon < 0:
            raise SchemaError(f"dp.eps must be >= 0, got {self.epsilon!r}")
        if not 0 < self.delta < 1:
            raise SchemaError(f"dp.delta must be in (0, 1), got {self.delta!r}")
        if not self.noise_multiplier > 0 or not self.clip_norm > 0:
            raise SchemaError("dp.sigma and dp.clip must be > 0")

    def to_wire(self) -> dict[str, Any]:
        return {
            "clip": self.clip_norm,
            "delta": self.delta,
            "eps": self.epsilon,
            "mode": self.mode,
            "sigma": self.noise_multiplier,
        }


@dataclass(frozen=True)
class Meta:
    """Sender-reported facts about an update. Informational: receivers never trust them for safety."""

    samples: int | None = None
    loss: float | None = None
    round: int | None = None

    def __post_init__(self) -> None:
        for name in ("samples", "round"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not 0 <= value <= _MAX_UINT64):
                raise WrongTypeError(f"meta.{name} must be an unsigned 64-bit integer, got {value!r}")
        if self.loss is not None and type(self.loss) is not float:
            raise WrongTypeError(f"meta.loss must be a float, got {self.loss!r}")
        if self.loss is not None and not math.isfinite(self.loss):
            raise NonFiniteError(f"meta.loss must be finite, got {self.loss!r}")

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.loss is not None:
            out["loss"] = self.loss
        if self.round is not None:
            out["round"] = self.round
        if self.samples is not None:
            out["samples"] = self.samples
        return out


@dataclass(frozen=True)
class Header:
    """The signed part of an envelope. For ``kind="snapshot"`` ``base`` is the zero digest."""

    kind: str
    network_id: str
    sender: str
    seq: int
    base: bytes
    result: bytes
    arch: bytes
    payload_digest: bytes
    payload_size: int
    codec: str = "raw"
    meta: Meta = field(default_factory=Meta)
    timestamp_ms: int = 0
    #: the sender's differential-privacy claim; ``None``: no DP (and no ``dp`` key on the wire)
    dp: DPClaim | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SchemaError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not is_network_id(self.network_id):
            raise SchemaError(f"net must be 1-64 characters of [A-Za-z0-9._-], got {self.network_id!r}")
        if not isinstance(self.sender, str):
            raise WrongTypeError("sender must be a peer id string")
        try:
            public_key_from_peer_id(self.sender)
        except IdentityError as exc:
            raise SchemaError(f"sender: {exc}") from None
        for name in ("seq", "payload_size", "timestamp_ms"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= _MAX_UINT64:
                raise WrongTypeError(f"{name} must be an unsigned 64-bit integer, got {value!r}")
        if self.seq < 1 and self.kind == "delta":
            raise SchemaError("a delta's seq starts at 1 (version 0 is the initial model)")
        for name in ("base", "result", "arch", "payload_digest"):
            value = getattr(self, name)
            if type(value) is not bytes or len(value) != DIGEST_SIZE:
                raise WrongTypeError(f"{name} must be a {DIGEST_SIZE}-byte digest")
        if self.kind == "snapshot" and self.base != ZERO_DIGEST:
            raise SchemaError("a snapshot has no base: base must be the zero digest")
        if not is_codec(self.codec):
            raise SchemaError(f"codec must be one of {CODECS} or topk:<density>, got {self.codec!r}")
        if not isinstance(self.meta, Meta):
            raise WrongTypeError("meta must be a Meta")
        if self.dp is not None and not isinstance(self.dp, DPClaim):
            raise WrongTypeError("dp must be a DPClaim or None")

    def to_wire(self) -> dict[str, Any]:
        """The header as a map with keys in canonical (bytewise sorted) order."""
        out: dict[str, Any] = {"arch": self.arch, "base": self.base, "codec": self.codec}
        if self.dp is not None:  # absent when off: a header without DP is byte-identical to version 1's
            out["dp"] = self.dp.to_wire()
        return out | {
            "kind": self.kind,
            "meta": self.meta.to_wire(),
            "net": self.network_id,
            "payload_digest": self.payload_digest,
            "payload_size": self.payload_size,
            "result": self.result,
            "sender": self.sender,
            "seq": self.seq,
            "ts": self.timestamp_ms,
        }


def is_network_id(value: object) -> bool:
    """1-64 characters of ``[A-Za-z0-9._-]``: the only network ids the wire format carries."""
    return isinstance(value, str) and _NETWORK_ID_RE.fullmatch(value) is not None


def encode_header(header: Header) -> bytes:
    return _pack(header.to_wire())


def _check_type(value: Any, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise WrongTypeError(f"{what} has the wrong type ({type(value).__name__})")


def _check_str_keys(mapping: dict[Any, Any], what: str) -> None:
    """Map keys are str: a bin key (msgpack allows str and bin keys) is refused before any set arithmetic or
    sorting mixes the two types."""
    for key in mapping:
        if type(key) is not str:
            raise WrongTypeError(f"{what} keys must be msgpack str, got {type(key).__name__} {key!r:.40}")


#: decoded headers remembered process-wide (:func:`decode_header`); a header is at most ~0.5 kB
DECODED_MEMO_SIZE = 16384


def decode_header(header_bytes: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Header:
    """Parse and validate header bytes; they must be the canonical encoding of what they contain.

    The result is a function of the bytes (and ``limits``) alone and immutable (frozen dataclasses of str,
    int, float and bytes), so the headers of accepted bytes are remembered in a bounded process-wide LRU keyed
    on the exact bytes: every receiver of one gossiped envelope decodes the same header (6+ peers of one
    memory-engine process; a real peer's duplicates). Refused bytes are not remembered (they raise inside
    the memo) and are checked again every time.
    """
    return _decode_header_memo(bytes(header_bytes), limits)


def _decode_header(header_bytes: bytes, limits: Limits) -> Header:
    raw = _unpack(header_bytes, "header", max_str_len=256, max_bin_len=64, max_array_len=16, max_map_len=16)
    if not isinstance(raw, dict):
        raise WrongTypeError("header must be a msgpack map")
    _check_str_keys(raw, "header")
    missing = HEADER_FIELDS - raw.keys()
    if missing:
        raise MissingFieldError(f"header lacks field(s) {sorted(missing)}")
    unknown = raw.keys() - HEADER_FIELDS - OPTIONAL_HEADER_FIELDS
    if unknown:
        raise UnknownFieldError(f"header has unknown field(s) {sorted(unknown)}")
    for key in ("arch", "base", "payload_digest", "result"):
        _check_type(raw[key], bytes, f"header.{key}")
    for key in ("codec", "kind", "net", "sender"):
        _check_type(raw[key], str, f"header.{key}")
    for key in ("payload_size", "seq", "ts"):
        _check_type(raw[key], int, f"header.{key}")
    meta_raw = raw["meta"]
    _check_type(meta_raw, dict, "header.meta")
    _check_str_keys(meta_raw, "header.meta")
    unknown_meta = meta_raw.keys() - META_FIELDS
    if unknown_meta:
        raise UnknownFieldError(f"header.meta has unknown field(s) {sorted(unknown_meta)}")
    for key in ("round", "samples"):
        if key in meta_raw:
            _check_type(meta_raw[key], int, f"header.meta.{key}")
    if "loss" in meta_raw:
        _check_type(meta_raw["loss"], float, "header.meta.loss")
    dp = _decode_dp(raw["dp"]) if "dp" in raw else None
    try:
        header = Header(
            kind=raw["kind"],
            network_id=raw["net"],
            sender=raw["sender"],
            seq=raw["seq"],
            base=raw["base"],
            result=raw["result"],
            arch=raw["arch"],
            payload_digest=raw["payload_digest"],
            payload_size=raw["payload_size"],
            codec=raw["codec"],
            meta=Meta(
                samples=meta_raw.get("samples"), loss=meta_raw.get("loss"), round=meta_raw.get("round")
            ),
            timestamp_ms=raw["ts"],
            dp=dp,
        )
    except (TypeError, ValueError) as exc:  # defensive: constructors raise WireErrors for known cases
        raise SchemaError(f"header: {exc}") from None
    if encode_header(header) != header_bytes:
        raise NonCanonicalError("header is not canonically encoded (key order, integer or float width)")
    return header


def _decode_dp(raw: Any) -> DPClaim:
    """The ``dp`` map: exactly its five keys, ``mode`` a str and the rest float64 (checked by ``DPClaim``)."""
    _check_type(raw, dict, "header.dp")
    _check_str_keys(raw, "header.dp")
    missing = DP_FIELDS - raw.keys()
    if missing:
        raise MissingFieldError(f"header.dp lacks field(s) {sorted(missing)}")
    unknown = raw.keys() - DP_FIELDS
    if unknown:
        raise UnknownFieldError(f"header.dp has unknown field(s) {sorted(unknown)}")
    _check_type(raw["mode"], str, "header.dp.mode")
    for key in ("clip", "delta", "eps", "sigma"):
        _check_type(raw[key], float, f"header.dp.{key}")
    return DPClaim(
        mode=raw["mode"],
        epsilon=raw["eps"],
        delta=raw["delta"],
        noise_multiplier=raw["sigma"],
        clip_norm=raw["clip"],
    )


_decode_header_memo = functools.lru_cache(maxsize=DECODED_MEMO_SIZE)(_decode_header)
