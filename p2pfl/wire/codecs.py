"""Codecs: how a sender compresses tensors for the wire, and how a receiver converts them back to its
model's dtypes.

The codec is named in the signed header. ``fp16`` halves float32/64 tensors and refuses values that do not
fit float16 rather than sending infinities; ``int8`` (per-tensor scale) and ``topk:<density>`` (the largest
magnitudes, with their indices) are the lossy delta codecs of :mod:`p2pfl.wire.compress`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from p2pfl.wire.canonical import _array_prefix, _bin_prefix, _pack
from p2pfl.wire.compress import decode_lossy, encode_lossy, is_lossy, wire_specs
from p2pfl.wire.errors import DtypeError, NonFiniteError, SchemaError
from p2pfl.wire.tensors import DTYPES, Tensors, _all_finite

#: The fixed codec names; ``topk:<density>`` (e.g. ``topk:0.1``, see :func:`is_codec`) is the parametric one.
CODECS: Final = ("raw", "fp16", "int8")


def is_codec(codec: object) -> bool:
    """Whether ``codec`` names a codec: one of :data:`CODECS` or ``topk:<density>`` with the kept fraction
    written ``1`` or ``0.`` plus 1-4 digits without a trailing zero (one spelling per density)."""
    return isinstance(codec, str) and (codec in CODECS or is_lossy(codec))


def _check(codec: str) -> None:
    if not is_codec(codec):
        raise SchemaError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}, topk:<density>")


def apply_codec(tensors: Tensors, codec: str) -> dict[str, npt.NDArray[Any]]:
    """Compress tensors for the wire. ``fp16`` halves float32/64 tensors (values must fit float16)."""
    _check(codec)
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
    return encode_lossy(tensors, codec)


def undo_codec(tensors: Tensors, codec: str, like: Tensors) -> dict[str, npt.NDArray[Any]]:
    """Convert decoded tensors back to the dtypes of ``like`` (the receiver's model)."""
    _check(codec)
    if is_lossy(codec):
        return decode_lossy(tensors, codec, like)
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


def payload_size(codec: str, like: Tensors) -> int:
    """The exact size of a ``codec`` payload of a model shaped like ``like``, computed from names, dtypes and
    shapes only (no tensor is built): what a receiver requires of a delta before fetching it."""
    _check(codec)
    if is_lossy(codec):
        specs = wire_specs(codec, like)
    else:
        specs = []
        for name, arr in like.items():
            wire = arr.dtype
            if codec == "fp16" and wire.kind == "f" and wire.itemsize > 2:
                wire = np.dtype(np.float16)
            specs.append((name, _dtype_name(wire), tuple(int(d) for d in arr.shape)))
    size = len(_array_prefix(len(specs)))
    for name, dtype, shape in specs:
        nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
        size += 1 + len(_pack(name)) + len(_pack(dtype)) + len(_pack(list(shape)))
        size += len(_bin_prefix(nbytes)) + nbytes
    return size


def _dtype_name(dtype: np.dtype[Any]) -> str:
    for name, wire in DTYPES.items():
        if dtype.kind == wire.kind and dtype.itemsize == wire.itemsize:
            return name
    raise DtypeError(f"dtype {dtype} has no wire form; allowed: {', '.join(DTYPES)}")


class PayloadSizes:
    """Payload size per codec name for one model layout, computed on first use and cached (bounded: a sender
    can name many ``topk`` densities). ``get`` returns None for a name that is not a codec."""

    def __init__(self, like: Tensors, max_entries: int = 64) -> None:
        self._like = dict(like)
        self._max = max_entries
        self._sizes: OrderedDict[str, int] = OrderedDict()

    def __getitem__(self, codec: str) -> int:
        size = self.get(codec)
        if size is None:
            raise KeyError(codec)
        return size

    def get(self, codec: str) -> int | None:
        size = self._sizes.get(codec)
        if size is not None:
            self._sizes.move_to_end(codec)
            return size
        if not is_codec(codec):
            return None
        try:
            size = payload_size(codec, self._like)
        except SchemaError:  # the model's names clash with the codec's companion entries
            return None
        self._sizes[codec] = size
        while len(self._sizes) > self._max:
            self._sizes.popitem(last=False)
        return size
