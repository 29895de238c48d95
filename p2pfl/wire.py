"""The signed msgpack envelope for every message that crosses the network; spec in ``docs/wire-format.md``.

Layout in one breath: an *envelope* is a 4-element msgpack array ``[version, header, signature, payload]``.
``header`` is a canonical msgpack map carried as opaque bytes and signed (Ed25519, domain-separated) by the
sender, whose public key is embedded in its peer ID. ``payload`` (optional: large ones are fetched separately
by digest) is a msgpack array of named tensors bound to the header by its BLAKE2b-256 digest and size.

Decoding is strict and cheap checks come first: size, outer framing, header schema and canonical form,
network, sender allowed, signature, then payload digest; a payload's shapes are all capped before any array
exists, then its canonical framing, then its values. An accepted input is the one canonical encoding of what
it decodes to. Every malformed input raises a specific :class:`WireError` subclass; nothing else escapes.
Which reason wins when several apply is specified in ``docs/wire-format.md`` section 9. The module is pure:
no clocks, no I/O.

Performance: sealing hashes the tensors in place and copies them once (``bytes.join`` over buffer views);
opening takes the payload as a zero-copy view of the input and copies tensor bytes once while decoding, so at
most two copies of a payload are alive at any time.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import msgpack
import numpy as np
import numpy.typing as npt

from p2pfl.errors import IdentityError, P2PFLError
from p2pfl.identity import SIGNATURE_SIZE, Identity, public_key_from_peer_id, verify

VERSION: Final = 1
DIGEST_SIZE: Final = 32
SIGNING_DOMAIN: Final = b"p2pfl/envelope/v1\x00"
ZERO_DIGEST: Final = bytes(DIGEST_SIZE)

KINDS: Final = ("delta", "snapshot")
CODECS: Final = ("raw", "fp16")
#: wire dtype name -> numpy dtype (always little-endian on the wire).
DTYPES: Final[Mapping[str, np.dtype[Any]]] = {
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
}
_FLOAT_DTYPES: Final = frozenset({"float16", "float32", "float64"})
_DTYPE_BYTES: Final = {name: msgpack.packb(name) for name in DTYPES}
_NETWORK_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_UINT64: Final = (1 << 64) - 1
_NUMPY_MAX_NDIM: Final = 32
_NUMPY_MAX_ELEMENTS: Final = 1 << 48

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


# --------------------------------------------------------------------------------------------- errors


class WireError(P2PFLError):
    """Root of every decoding/encoding rejection. ``reason`` is a stable slug used to count rejections."""

    reason: ClassVar[str] = "wire"


class OversizeError(WireError):
    reason = "oversize"


class TruncatedError(WireError):
    reason = "truncated"


class TrailingBytesError(WireError):
    reason = "trailing_bytes"


class MalformedError(WireError):
    """Not valid msgpack, or not the envelope's fixed framing."""

    reason = "malformed"


class SchemaError(WireError):
    reason = "schema"


class MissingFieldError(SchemaError):
    reason = "missing_field"


class UnknownFieldError(SchemaError):
    reason = "unknown_field"


class WrongTypeError(SchemaError):
    reason = "wrong_type"


class NonCanonicalError(SchemaError):
    """Valid msgpack, but not the one canonical encoding (key order, integer width, float width, ...)."""

    reason = "non_canonical"


class VersionError(WireError):
    reason = "unsupported_version"


class NetworkMismatchError(WireError):
    reason = "wrong_network"


class SenderNotAllowedError(WireError):
    reason = "sender_not_allowed"


class SignatureError(WireError):
    reason = "bad_signature"


class SenderMismatchError(WireError):
    """Validly signed, but by someone other than the peer this message was expected from."""

    reason = "sender_mismatch"


class DigestMismatchError(WireError):
    reason = "digest_mismatch"


class DtypeError(WireError):
    reason = "bad_dtype"


class ShapeError(WireError):
    reason = "bad_shape"


class NonFiniteError(WireError):
    reason = "non_finite"


class DuplicateNameError(WireError):
    reason = "duplicate_name"


# --------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Limits:
    """Size caps, enforced before (envelope) or while (tensors) decoding."""

    max_envelope: int = 256 * 1024 * 1024
    max_header: int = 4096
    max_tensors: int = 4096
    max_name: int = 256
    max_ndim: int = 8
    max_elements: int = 1 << 31

    def __post_init__(self) -> None:
        for name in ("max_envelope", "max_header", "max_tensors", "max_name", "max_ndim", "max_elements"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")
        # numpy's own bounds, so no shape that passes the limits can make numpy raise
        if self.max_ndim > _NUMPY_MAX_NDIM:
            raise ValueError(f"Limits.max_ndim must be at most {_NUMPY_MAX_NDIM}, got {self.max_ndim}")
        if self.max_elements > _NUMPY_MAX_ELEMENTS:
            raise ValueError(f"Limits.max_elements must be at most 2**48, got {self.max_elements}")


DEFAULT_LIMITS: Final = Limits()


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
        if self.codec not in CODECS:
            raise SchemaError(f"codec must be one of {CODECS}, got {self.codec!r}")
        if not isinstance(self.meta, Meta):
            raise WrongTypeError("meta must be a Meta")

    def to_wire(self) -> dict[str, Any]:
        """The header as a map with keys in canonical (bytewise sorted) order."""
        return {
            "arch": self.arch,
            "base": self.base,
            "codec": self.codec,
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


@dataclass(frozen=True)
class Envelope:
    """An opened (verified) envelope. ``payload`` is a read-only view into the input, or None."""

    header: Header
    signature: bytes
    header_bytes: bytes
    payload: memoryview | None = field(default=None, compare=False)


Tensors = Mapping[str, npt.NDArray[Any]]


# ---------------------------------------------------------------------------------------- primitives


def is_network_id(value: object) -> bool:
    """1-64 characters of ``[A-Za-z0-9._-]``: the only network ids the wire format carries."""
    return isinstance(value, str) and _NETWORK_ID_RE.fullmatch(value) is not None


def digest(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE2b-256 of ``data``: the digest of payloads and models everywhere in p2pfl."""
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _bin_prefix(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + bytes([n])
    if n < 1 << 16:
        return b"\xc5" + struct.pack(">H", n)
    if n < 1 << 32:
        return b"\xc6" + struct.pack(">I", n)
    raise OversizeError(f"a msgpack bin holds at most 4 GiB, got {n} bytes")


def _str_prefix(n: int) -> bytes:
    if n < 32:
        return bytes([0xA0 | n])
    if n < 1 << 8:
        return b"\xd9" + bytes([n])
    if n < 1 << 16:
        return b"\xda" + struct.pack(">H", n)
    return b"\xdb" + struct.pack(">I", n)


def _uint_bytes(n: int) -> bytes:
    """The shortest msgpack form of an unsigned integer below 2**64 (what msgpack.packb produces)."""
    if n < 0x80:
        return bytes([n])
    if n < 1 << 8:
        return b"\xcc" + bytes([n])
    if n < 1 << 16:
        return b"\xcd" + struct.pack(">H", n)
    if n < 1 << 32:
        return b"\xce" + struct.pack(">I", n)
    return b"\xcf" + struct.pack(">Q", n)


def _array_prefix(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def _reject_ext(code: int, data: bytes) -> Any:
    raise WrongTypeError(f"msgpack extension types are not allowed (got ext type {code})")


def _unpack(data: bytes | memoryview, what: str, **limits: int) -> Any:
    """msgpack.unpackb that raises only WireErrors, classifying truncation and trailing bytes."""
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True, ext_hook=_reject_ext, timestamp=0, **limits
        )
    except WireError:
        raise
    except msgpack.ExtraData:
        raise TrailingBytesError(f"{what}: trailing bytes after the msgpack value") from None
    except UnicodeDecodeError:
        raise WrongTypeError(f"{what}: a string is not valid UTF-8") from None
    except ValueError as exc:  # msgpack's FormatError, StackError and limit errors are ValueErrors
        if "incomplete" in str(exc):
            raise TruncatedError(f"{what}: input ends before the msgpack value does") from None
        if "exceeds max_" in str(exc):
            raise OversizeError(f"{what}: a value exceeds its size limit ({exc})") from None
        raise MalformedError(f"{what}: not valid msgpack ({str(exc) or type(exc).__name__})") from None
    except (TypeError, OverflowError, RecursionError) as exc:  # e.g. unhashable map keys
        raise MalformedError(f"{what}: not valid msgpack ({exc})") from None


# ------------------------------------------------------------------------------------------- tensors


def _tensor_parts(name: str, array: npt.NDArray[Any]) -> tuple[bytes, memoryview]:
    """The msgpack bytes of one tensor entry, split as (prefix, raw data view) so data is never copied."""
    dtype_name = _dtype_name(name, array.dtype)
    if not isinstance(name, str) or not name:
        raise SchemaError(f"tensor names must be non-empty strings, got {name!r}")
    arr = np.require(array, dtype=DTYPES[dtype_name], requirements="C")  # keeps 0-d arrays 0-d
    if dtype_name in _FLOAT_DTYPES and not _all_finite(arr):
        raise NonFiniteError(f"tensor {name!r} contains NaN or infinity")
    view = arr.reshape(-1).view(np.uint8).data if arr.size else memoryview(b"")
    prefix = b"\x94" + _pack(name) + _pack(dtype_name) + _pack(list(arr.shape)) + _bin_prefix(view.nbytes)
    return prefix, view


def _dtype_name(name: str, dtype: np.dtype[Any]) -> str:
    for wire_name, wire_dtype in DTYPES.items():
        if dtype.kind == wire_dtype.kind and dtype.itemsize == wire_dtype.itemsize:
            return wire_name
    raise DtypeError(f"tensor {name!r} has dtype {dtype}; allowed: {', '.join(DTYPES)}")


def _all_finite(arr: npt.NDArray[Any], chunk: int = 1 << 20) -> bool:
    flat = arr.reshape(-1)
    return all(bool(np.isfinite(flat[i : i + chunk]).all()) for i in range(0, flat.size, chunk))


def _payload_parts(tensors: Tensors) -> list[bytes | memoryview]:
    names = sorted(tensors, key=lambda n: n.encode("utf-8") if isinstance(n, str) else b"")
    parts: list[bytes | memoryview] = [_array_prefix(len(names))]
    for name in names:
        prefix, view = _tensor_parts(name, tensors[name])
        parts += (prefix, view)
    return parts


def encode_tensors(tensors: Tensors) -> bytes:
    """Canonical payload bytes of named tensors (sorted by UTF-8 name; raw little-endian C order)."""
    return b"".join(_payload_parts(tensors))


def model_digest(tensors: Tensors) -> bytes:
    """Digest of a model: BLAKE2b-256 of ``encode_tensors(tensors)``, computed without building it."""
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for part in _payload_parts(tensors):
        h.update(part)
    return h.digest()


def arch_digest(tensors: Tensors) -> bytes:
    """Digest of a model's architecture: names, dtypes and shapes, not values."""
    spec = [[n, _dtype_name(n, tensors[n].dtype), list(tensors[n].shape)] for n in sorted(tensors)]
    return digest(_pack(spec))


def decode_tensors(
    payload: bytes | memoryview, *, limits: Limits = DEFAULT_LIMITS
) -> dict[str, npt.NDArray[Any]]:
    """Decode and check payload bytes. Arrays are read-only, little-endian, C order.

    Checks, the first failure wins: payload size; msgpack framing; each entry in order (form, name, dtype,
    shape, element count, byte count); names unique and sorted; the canonical encoding of the whole payload;
    finite float values. No array exists before every entry's shape and size have passed.
    """
    view = memoryview(payload).cast("B")
    if view.nbytes > limits.max_envelope:
        raise OversizeError(f"payload of {view.nbytes} bytes exceeds the limit of {limits.max_envelope}")
    entries = _unpack(
        view,
        "payload",
        max_array_len=max(limits.max_tensors, limits.max_ndim, 4),
        max_map_len=16,
        max_str_len=limits.max_name,
    )
    if not isinstance(entries, list):
        raise WrongTypeError("payload must be a msgpack array of tensors")
    if len(entries) > limits.max_tensors:
        raise OversizeError(f"payload has {len(entries)} tensors; the limit is {limits.max_tensors}")
    checked: list[_Entry] = []
    previous: bytes | None = None
    for raw_entry in entries:
        entry = _check_entry(raw_entry, limits)
        key = entry.name.encode("utf-8")
        if key == previous:
            raise DuplicateNameError(f"tensor {entry.name!r} appears twice in the payload")
        if previous is not None and key < previous:
            raise NonCanonicalError("tensors must be sorted by the UTF-8 bytes of their names")
        previous = key
        checked.append(entry)
    _check_canonical_payload(view, checked)
    out: dict[str, npt.NDArray[Any]] = {}
    for entry in checked:
        array = np.frombuffer(entry.data, dtype=DTYPES[entry.dtype]).reshape(entry.shape)
        if entry.dtype in _FLOAT_DTYPES and not _all_finite(array):
            raise NonFiniteError(f"tensor {entry.name!r} contains NaN or infinity")
        out[entry.name] = array
    return out


@dataclass(frozen=True)
class _Entry:
    """One payload entry whose fields have passed every check that needs no allocation."""

    name: str
    dtype: str
    shape: list[int]
    data: bytes


def _check_entry(entry: Any, limits: Limits) -> _Entry:
    if not isinstance(entry, list) or len(entry) != 4:
        raise WrongTypeError("each tensor must be a 4-element array [name, dtype, shape, data]")
    name, dtype_name, shape, data = entry
    if not isinstance(name, str) or not name:
        raise WrongTypeError("tensor name must be a non-empty string")
    if len(name.encode("utf-8")) > limits.max_name:
        raise OversizeError(f"tensor name of {len(name.encode('utf-8'))} bytes exceeds {limits.max_name}")
    if not isinstance(dtype_name, str):
        raise WrongTypeError(f"tensor {name!r}: dtype must be a string")
    if dtype_name not in DTYPES:
        raise DtypeError(
            f"tensor {name!r}: dtype {dtype_name!r} is not allowed; allowed: {', '.join(DTYPES)}"
        )
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise WrongTypeError(f"tensor {name!r}: shape must be an array of unsigned integers")
    if len(shape) > limits.max_ndim:
        raise ShapeError(f"tensor {name!r}: {len(shape)} dimensions exceed the limit of {limits.max_ndim}")
    if any(d < 0 for d in shape):
        raise ShapeError(f"tensor {name!r}: negative dimension in shape {shape}")
    if not isinstance(data, bytes):
        raise WrongTypeError(f"tensor {name!r}: data must be msgpack bin")
    # The extent (product of the dimensions, a 0 counted as 1) is capped, not just the element count: numpy
    # refuses shapes like [0, 2**63] or [0, 2**61, 4] although they hold no element.
    extent = 1
    for d in shape:
        extent *= max(d, 1)
        if extent > limits.max_elements:
            raise OversizeError(
                f"tensor {name!r}: shape {shape} spans more than the limit of {limits.max_elements} elements"
            )
    count = math.prod(shape)
    nbytes = count * DTYPES[dtype_name].itemsize
    if nbytes != len(data):
        raise ShapeError(
            f"tensor {name!r}: shape {shape} of {dtype_name} needs {nbytes} bytes, got {len(data)}"
        )
    return _Entry(name, dtype_name, shape, data)


def _check_canonical_payload(view: memoryview, entries: list[_Entry]) -> None:
    """The payload bytes must be exactly what :func:`encode_tensors` makes of the decoded tensors.

    Only the framing is compared (array headers, names, dtypes, shapes, bin length prefixes), at the offsets
    the canonical encoding puts them: equal framing at equal offsets means equal data, so the tensor bytes
    are neither re-packed nor copied.
    """
    pos = len(_array_prefix(len(entries)))
    if view[:pos] != _array_prefix(len(entries)):
        raise NonCanonicalError("payload: the tensor array's length is not in its shortest encoding")
    for e in entries:
        name = e.name.encode("utf-8")
        shape = _array_prefix(len(e.shape)) + b"".join(map(_uint_bytes, e.shape))
        prefix = (
            b"\x94" + _str_prefix(len(name)) + name + _DTYPE_BYTES[e.dtype] + shape + _bin_prefix(len(e.data))
        )
        if view[pos : pos + len(prefix)] != prefix:
            raise NonCanonicalError(
                f"payload: tensor {e.name!r} is not canonically encoded (shortest integer, string, bin and"
                " array forms)"
            )
        pos += len(prefix) + len(e.data)
    if pos != view.nbytes:  # unreachable after a successful unpack; kept so the check stands alone
        raise NonCanonicalError("payload: length differs from the canonical encoding")


# ------------------------------------------------------------------------------------------- codecs


def apply_codec(tensors: Tensors, codec: str) -> dict[str, npt.NDArray[Any]]:
    """Compress tensors for the wire. ``fp16`` halves float32/64 tensors (values must fit float16)."""
    if codec == "raw":
        return dict(tensors)
    if codec == "fp16":
        out: dict[str, npt.NDArray[Any]] = {}
        for name, arr in tensors.items():
            if arr.dtype.kind == "f" and arr.dtype.itemsize > 2:
                with np.errstate(over="ignore"):
                    half = arr.astype(np.float16)
                if not _all_finite(half) and _all_finite(arr):
                    raise NonFiniteError(f"tensor {name!r} overflows float16; use codec 'raw'")
                out[name] = half
            else:
                out[name] = arr
        return out
    raise SchemaError(f"unknown codec {codec!r}; known: {CODECS}")


def undo_codec(tensors: Tensors, codec: str, like: Tensors) -> dict[str, npt.NDArray[Any]]:
    """Convert decoded tensors back to the dtypes of ``like`` (the receiver's model)."""
    if codec not in CODECS:
        raise SchemaError(f"unknown codec {codec!r}; known: {CODECS}")
    out: dict[str, npt.NDArray[Any]] = {}
    for name, arr in tensors.items():
        target = like[name].dtype if name in like else arr.dtype
        if arr.dtype == target:
            out[name] = arr
            continue
        if arr.dtype.kind == "f" and target.kind != "f":
            raise DtypeError(f"tensor {name!r}: {arr.dtype} values cannot stand for the model's {target}")
        with np.errstate(all="ignore"):
            converted = arr.astype(target)
        if target.kind == "f" and not _all_finite(converted):
            raise NonFiniteError(f"tensor {name!r}: a value overflows the model's {target}")
        out[name] = converted
    return out


# -------------------------------------------------------------------------------------- envelopes


def signed_bytes(header_bytes: bytes) -> bytes:
    """Exactly what the sender signs: the domain tag followed by the header's canonical bytes."""
    return SIGNING_DOMAIN + header_bytes


def encode_header(header: Header) -> bytes:
    return _pack(header.to_wire())


def seal(identity: Identity, header: Header, payload: Iterable[bytes | memoryview] | bytes | None) -> bytes:
    """Sign ``header`` and frame it with the (optional) payload into envelope bytes.

    ``payload`` may be the parts from :func:`payload_parts` (no intermediate copy) or plain bytes. The
    header's digest and size must describe it; that is checked here so a bad envelope is never sent.
    """
    if header.sender != identity.peer_id:
        raise SenderMismatchError(f"header.sender {header.sender} is not this identity ({identity.peer_id})")
    header_bytes = encode_header(header)
    sig = identity.sign(signed_bytes(header_bytes))
    parts: list[bytes | memoryview] = [b"\x94", _pack(VERSION), _bin_prefix(len(header_bytes)), header_bytes]
    parts += (_bin_prefix(len(sig)), sig)
    if payload is None:
        parts.append(b"\xc0")
    else:
        body = [payload] if isinstance(payload, bytes | memoryview) else list(payload)
        size = sum(memoryview(p).nbytes for p in body)
        h = hashlib.blake2b(digest_size=DIGEST_SIZE)
        for part in body:
            h.update(part)
        if size != header.payload_size or h.digest() != header.payload_digest:
            raise DigestMismatchError("header.payload_digest/payload_size do not describe the payload given")
        parts.append(_bin_prefix(size))
        parts += body
    return b"".join(parts)


def payload_parts(tensors: Tensors) -> tuple[list[bytes | memoryview], bytes, int]:
    """(parts, digest, size) of a payload, for :func:`seal` without building the payload first."""
    parts = _payload_parts(tensors)
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    size = 0
    for part in parts:
        h.update(part)
        size += memoryview(part).nbytes
    return parts, h.digest(), size


class _Reader:
    """Strict reader of the envelope's fixed outer framing, with zero-copy access to the payload."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise TruncatedError(f"envelope ends inside {what}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def bin_or_nil(self, what: str) -> memoryview | None:
        tag = self.byte(what)
        if tag == 0xC0:
            return None
        widths = {0xC4: 1, 0xC5: 2, 0xC6: 4}
        if tag not in widths:
            raise WrongTypeError(f"{what} must be msgpack bin (got type byte 0x{tag:02x})")
        n = int.from_bytes(self.take(widths[tag], what), "big")
        if _bin_prefix(n)[0] != tag:
            raise NonCanonicalError(f"{what}: length {n} is not in its shortest bin encoding")
        return self.take(n, what)


def _check_type(value: Any, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise WrongTypeError(f"{what} has the wrong type ({type(value).__name__})")


def _check_str_keys(mapping: dict[Any, Any], what: str) -> None:
    """Map keys are str: a bin key (msgpack allows str and bin keys) is refused before any set arithmetic or
    sorting mixes the two types."""
    for key in mapping:
        if type(key) is not str:
            raise WrongTypeError(f"{what} keys must be msgpack str, got {type(key).__name__} {key!r:.40}")


def decode_header(header_bytes: bytes, limits: Limits = DEFAULT_LIMITS) -> Header:
    """Parse and validate header bytes; they must be the canonical encoding of what they contain."""
    raw = _unpack(header_bytes, "header", max_str_len=256, max_bin_len=64, max_array_len=16, max_map_len=16)
    if not isinstance(raw, dict):
        raise WrongTypeError("header must be a msgpack map")
    _check_str_keys(raw, "header")
    missing = HEADER_FIELDS - raw.keys()
    if missing:
        raise MissingFieldError(f"header lacks field(s) {sorted(missing)}")
    unknown = raw.keys() - HEADER_FIELDS
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
        )
    except (TypeError, ValueError) as exc:  # defensive: constructors raise WireErrors for known cases
        raise SchemaError(f"header: {exc}") from None
    if encode_header(header) != header_bytes:
        raise NonCanonicalError("header is not canonically encoded (key order, integer or float width)")
    return header


def open_envelope(
    data: bytes | bytearray | memoryview,
    *,
    limits: Limits = DEFAULT_LIMITS,
    network_id: str | None = None,
    allowed: Callable[[str], bool] | None = None,
    expected_sender: str | None = None,
) -> Envelope:
    """Verify and decode envelope bytes, cheapest checks first. Raises only :class:`WireError`.

    ``network_id``: reject envelopes of other networks. ``allowed``: access-list predicate on the sender.
    ``expected_sender``: the peer this message must come from (e.g. the peer a fetch was sent to).
    """
    view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    if len(view) > limits.max_envelope:
        raise OversizeError(f"envelope of {len(view)} bytes exceeds the limit of {limits.max_envelope}")
    reader = _Reader(view)
    tag = reader.byte("envelope")
    if tag != 0x94:
        raise MalformedError(f"an envelope is a 4-element msgpack array (got type byte 0x{tag:02x})")
    version = reader.byte("version")
    if version > 0x7F:
        raise WrongTypeError("envelope version must be a small positive integer")
    if version != VERSION:
        raise VersionError(f"envelope version {version} is not supported (this is version {VERSION})")
    header_view = reader.bin_or_nil("header")
    sig_view = reader.bin_or_nil("signature")
    payload = reader.bin_or_nil("payload")
    if header_view is None or sig_view is None:
        raise WrongTypeError("header and signature must be msgpack bin, not nil")
    if reader.pos != len(view):
        raise TrailingBytesError(f"{len(view) - reader.pos} trailing bytes after the envelope")
    if len(header_view) > limits.max_header:
        raise OversizeError(f"header of {len(header_view)} bytes exceeds the limit of {limits.max_header}")
    if len(sig_view) != SIGNATURE_SIZE:
        raise WrongTypeError(f"signature must be {SIGNATURE_SIZE} bytes, got {len(sig_view)}")
    header_bytes = bytes(header_view)
    header = decode_header(header_bytes, limits)
    if network_id is not None and header.network_id != network_id:
        raise NetworkMismatchError(f"envelope is for network {header.network_id!r}, not {network_id!r}")
    if allowed is not None and not allowed(header.sender):
        raise SenderNotAllowedError(f"sender {header.sender} is not allowed in this network")
    signature = bytes(sig_view)
    if not verify(public_key_from_peer_id(header.sender), signed_bytes(header_bytes), signature):
        raise SignatureError(f"signature does not verify under the key of sender {header.sender}")
    if expected_sender is not None and header.sender != expected_sender:
        raise SenderMismatchError(f"envelope is signed by {header.sender}, expected {expected_sender}")
    if payload is not None:
        check_payload(payload, header)
    return Envelope(header=header, signature=signature, header_bytes=header_bytes, payload=payload)


def check_payload(payload: bytes | memoryview, header: Header) -> None:
    """Check that ``payload`` (inline, or fetched separately by digest) is the one the header signed."""
    size = memoryview(payload).nbytes
    if size != header.payload_size:
        raise DigestMismatchError(f"payload has {size} bytes; the header says {header.payload_size}")
    if digest(payload) != header.payload_digest:
        raise DigestMismatchError("payload does not match the digest in the signed header")


def iter_reasons() -> Iterator[type[WireError]]:
    """Every concrete rejection class, for counters and docs."""
    stack: list[type[WireError]] = [WireError]
    while stack:
        cls = stack.pop()
        yield cls
        stack.extend(cls.__subclasses__())
