"""Codecs: how a sender compresses tensors for the wire, and how a receiver converts them back to its
model's dtypes.

The codec is named in the signed header; ``fp16`` halves float32/64 tensors and refuses values that do not
fit float16 rather than sending infinities.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from p2pfl.wire.errors import DtypeError, NonFiniteError, SchemaError
from p2pfl.wire.tensors import Tensors, _all_finite

CODECS: Final = ("raw", "fp16")


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
