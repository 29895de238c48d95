"""Payloads: named tensors as a canonical msgpack array, and the BLAKE2b-256 digests of payloads and models.

A payload is a msgpack array of ``[name, dtype, shape, data]`` entries sorted by the UTF-8 bytes of their
names, data raw little-endian in C order. Decoding caps every entry's shape and size before any array exists,
then checks the payload's canonical framing, then its values (finite floats).

Performance: encoding hashes the tensors in place and hands out buffer views (one copy when they are
joined); decoding compares framing at the offsets the canonical encoding puts it, so tensor bytes are
neither re-packed nor copied more than once.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import numpy as np
import numpy.typing as npt

from p2pfl.wire.canonical import _array_prefix, _bin_prefix, _pack, _str_prefix, _uint_bytes, _unpack
from p2pfl.wire.errors import (
    DtypeError,
    DuplicateNameError,
    NonCanonicalError,
    NonFiniteError,
    OversizeError,
    SchemaError,
    ShapeError,
    WrongTypeError,
)
from p2pfl.wire.limits import DEFAULT_LIMITS, Limits

DIGEST_SIZE: Final = 32
ZERO_DIGEST: Final = bytes(DIGEST_SIZE)

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
_F32_LE: Final = np.dtype("<f4")
_FLOAT_DTYPES: Final = frozenset({"float16", "float32", "float64"})
_DTYPE_BYTES: Final = {name: msgpack.packb(name) for name in DTYPES}

Tensors = Mapping[str, npt.NDArray[Any]]


def digest(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE2b-256 of ``data``: the digest of payloads and models everywhere in p2pfl."""
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()


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


class FlatDigest:
    """:func:`model_digest` of float32 tensors stored back to back in one vector, in the payload's order
    (names sorted by their UTF-8 bytes), with each entry's framing built once: a replica's digest is checked
    after every applied delta, and re-packing names, dtypes and shapes cost ~90 % of it for small models.
    The bytes hashed are exactly :func:`encode_tensors`'s."""

    def __init__(self, names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> None:
        self.size = sum(math.prod(s) for s in shapes)
        canonical = sorted(names, key=lambda n: n.encode("utf-8"))
        parts = _payload_parts({n: np.zeros(s, np.float32) for n, s in zip(names, shapes, strict=True)})
        framing = [bytes(p) for p in parts[1::2]]  # [array header, (entry header, data) ...]
        self._array_only: bytes | None = None
        if framing:
            framing[0] = bytes(parts[0]) + framing[0]
        else:
            self._array_only = bytes(parts[0])
        self._entries: list[tuple[bytes, int, int]] = []
        start = 0
        for head, shape in zip(framing, shapes, strict=True):
            end = start + 4 * math.prod(shape)
            self._entries.append((head, start, end))
            start = end
        self._usable = list(names) == canonical

    def __call__(self, vec: npt.NDArray[Any]) -> bytes | None:
        """The digest of the tensors ``vec`` holds, or None when ``vec`` is not a finite, contiguous
        little-endian float32 vector of this size (the caller's general path then decides, and raises)."""
        if (
            not self._usable
            or vec.dtype != _F32_LE
            or vec.ndim != 1
            or vec.size != self.size
            or not vec.flags.c_contiguous
            or not bool(np.isfinite(vec).all())
        ):
            return None
        h = hashlib.blake2b(digest_size=DIGEST_SIZE)
        if self._array_only is not None:
            h.update(self._array_only)
        data = vec.view(np.uint8).data
        for head, start, end in self._entries:
            h.update(head)
            h.update(data[start:end])
        return h.digest()


def payload_parts(tensors: Tensors) -> tuple[list[bytes | memoryview], bytes, int]:
    """(parts, digest, size) of a payload, for :func:`seal` without building the payload first."""
    parts = _payload_parts(tensors)
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    size = 0
    for part in parts:
        h.update(part)
        size += memoryview(part).nbytes
    return parts, h.digest(), size


def arch_digest(tensors: Tensors) -> bytes:
    """Digest of a model's architecture: names, dtypes and shapes, not values."""
    spec = [[n, _dtype_name(n, tensors[n].dtype), list(tensors[n].shape)] for n in sorted(tensors)]
    return digest(_pack(spec))


#: payloads of at most this many bytes have their decoded tensors remembered (:func:`decode_tensors`)
MEMO_PAYLOAD_MAX: Final = 64 * 1024
#: the memo holds at most this many bytes of payloads (keys) and tensors (values)
MEMO_BYTES: Final = 32 * 1024 * 1024

_Decoded = tuple[tuple[str, npt.NDArray[Any]], ...]


class _PayloadMemo:
    """A thread-safe LRU of decoded payloads bounded by the bytes it holds (keys and tensors)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._items: OrderedDict[tuple[bytes, Limits], _Decoded] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple[bytes, Limits]) -> _Decoded | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: tuple[bytes, Limits], value: _Decoded) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.nbytes += self._cost(key, value)
            while self.nbytes > self.max_bytes and self._items:
                self.nbytes -= self._cost(*self._items.popitem(last=False))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    @staticmethod
    def _cost(key: tuple[bytes, Limits], value: _Decoded) -> int:
        return len(key[0]) + sum(a.nbytes for _, a in value)


_memo = _PayloadMemo(MEMO_BYTES)


def decode_tensors(
    payload: bytes | memoryview, *, limits: Limits = DEFAULT_LIMITS
) -> dict[str, npt.NDArray[Any]]:
    """Decode and check payload bytes. Arrays are read-only, little-endian, C order.

    Checks, the first failure wins: payload size; msgpack framing; each entry in order (form, name, dtype,
    shape, element count, byte count); names unique and sorted; the canonical encoding of the whole payload;
    finite float values. No array exists before every entry's shape and size have passed.

    The result is a function of the bytes (and ``limits``) alone and its arrays are read-only (numpy refuses
    to make them writable), so the tensors of accepted payloads up to :data:`MEMO_PAYLOAD_MAX` bytes are
    remembered in a process-wide LRU of at most :data:`MEMO_BYTES`, keyed on the exact bytes: every receiver
    of one gossiped delta decodes the same payload (6+ peers of one memory-engine process; a real peer's
    duplicates). Each call returns a new dict. Refused payloads are not remembered.
    """
    view = memoryview(payload).cast("B")
    if view.nbytes > MEMO_PAYLOAD_MAX:
        return _decode_tensors(view, limits)
    key = (view.tobytes(), limits)
    hit = _memo.get(key)
    if hit is None:
        hit = tuple(_decode_tensors(view, limits).items())
        _memo.put(key, hit)
    return dict(hit)


def _decode_tensors(view: memoryview, limits: Limits) -> dict[str, npt.NDArray[Any]]:
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
