"""The lossy delta codecs: ``int8`` (per-tensor scale) and ``topk:<density>`` (sparsification).

Both turn one float tensor ``n`` of the model into two payload entries, ``n`` and ``n#scale`` / ``n#idx``,
whose dtypes and shapes follow from the model's layout alone, so a receiver knows the payload's exact size
before it fetches a byte (:func:`wire_specs`). Non-float tensors travel unchanged. Decoding is total: any
entry set that is not exactly what the sender's side of the codec produces for the receiver's layout raises a
:class:`~p2pfl.wire.errors.WireError` (``schema``, ``bad_dtype``, ``bad_shape``, ``non_finite``).

Neither codec keeps state. Error feedback is the sender's: it sends ``model - public`` where ``public`` is
what its receivers reconstructed from everything it sent so far (the engine's ``public`` model), so the part a
codec dropped in one round is still in the next round's delta (:func:`feedback_step`).
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from p2pfl.wire.errors import DtypeError, NonFiniteError, SchemaError, ShapeError
from p2pfl.wire.tensors import Tensors, _all_finite

#: Suffixes of the companion entries; a model whose own tensor names end so cannot use these codecs.
SCALE: Final = "#scale"
INDEX: Final = "#idx"
#: ``topk:`` followed by the kept fraction in (0, 1]: ``1`` or ``0.`` and 1-4 digits without a trailing 0.
_TOPK: Final = re.compile(r"topk:(1|0\.[0-9]{0,3}[1-9])")

Spec = tuple[str, str, tuple[int, ...]]
_F16_MAX: Final = float(np.finfo(np.float16).max)


def topk_density(codec: str) -> float | None:
    """The kept fraction of a ``topk:<density>`` codec name, None for any other name."""
    m = _TOPK.fullmatch(codec) if isinstance(codec, str) else None
    return float(m.group(1)) if m else None


def is_lossy(codec: str) -> bool:
    return codec == "int8" or topk_density(codec) is not None


def topk_count(size: int, density: float) -> int:
    """How many of ``size`` values ``topk`` keeps: at least one of a non-empty tensor."""
    return 0 if size == 0 else min(size, max(1, math.ceil(size * density - 1e-9)))


def index_dtype(size: int) -> str:
    """The narrowest wire dtype that holds every index of a tensor with ``size`` elements."""
    if size <= 1 << 8:
        return "uint8"
    if size <= 1 << 15:
        return "int16"
    return "int32"


def _is_float(arr: npt.NDArray[Any]) -> bool:
    return bool(arr.dtype.kind == "f")


def _check_names(like: Tensors) -> None:
    for name in like:
        if name.endswith((SCALE, INDEX)):
            raise SchemaError(f"tensor {name!r} ends in a codec suffix ({SCALE}, {INDEX}): use codec 'raw'")


def wire_specs(codec: str, like: Tensors) -> list[Spec]:
    """(name, wire dtype, shape) of every entry a ``codec`` payload of a model shaped like ``like`` holds."""
    density = topk_density(codec)
    out: list[Spec] = []
    for name, arr in like.items():
        shape = tuple(int(d) for d in arr.shape)
        if not _is_float(arr):
            out.append((name, _wire_name(arr.dtype), shape))
        elif density is not None:
            k = topk_count(arr.size, density)
            out += [(name, "float16", (k,)), (name + INDEX, index_dtype(arr.size), (k,))]
        else:
            out += [(name, "int8", shape), (name + SCALE, "float32", ())]
    return out


def _wire_name(dtype: np.dtype[Any]) -> str:
    return f"{'float' if dtype.kind == 'f' else 'uint' if dtype.kind == 'u' else 'int'}{dtype.itemsize * 8}"


# ------------------------------------------------------------------------------------------------- encode
def encode_lossy(tensors: Tensors, codec: str) -> dict[str, npt.NDArray[Any]]:
    """Compress for the wire (sender side). Raises ``NonFiniteError`` on non-finite input; ``topk`` values
    travel as float16, clipped to its range (error feedback sends the excess in later rounds)."""
    _check_names(tensors)
    density = topk_density(codec)
    out: dict[str, npt.NDArray[Any]] = {}
    for name, arr in tensors.items():
        if not _is_float(arr):
            out[name] = arr
            continue
        if not _all_finite(arr):
            raise NonFiniteError(f"tensor {name!r} contains NaN or infinity")
        flat = np.asarray(arr, dtype=np.float64).reshape(-1)
        if density is None:
            out[name], out[name + SCALE] = _int8(flat, arr.shape)
        else:
            out[name], out[name + INDEX] = _topk(name, flat, density)
    return out


def _int8(flat: npt.NDArray[np.float64], shape: tuple[int, ...]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    peak = float(np.abs(flat).max()) if flat.size else 0.0
    with np.errstate(over="ignore"):
        scale = np.float32(peak / 127.0)
    if not math.isfinite(float(scale)):
        raise NonFiniteError("a tensor's int8 scale overflows float32; use codec 'raw'")
    if scale == 0:
        q = np.zeros(flat.size, np.int8)
    else:
        q = np.clip(np.rint(flat / float(scale)), -127, 127).astype(np.int8)
    return q.reshape(shape), np.array(scale, dtype=np.float32)


def _topk(
    name: str, flat: npt.NDArray[np.float64], density: float
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    k = topk_count(flat.size, density)
    idx = np.arange(k) if k == flat.size else np.sort(np.argpartition(-np.abs(flat), k - 1)[:k])
    # Clipped to float16's range rather than refused: the sender's error feedback sends the excess later
    # (an exception here would stop the sender's round; measured: a sign-flip attacker's growing deltas).
    values = np.clip(flat[idx], -_F16_MAX, _F16_MAX).astype(np.float16)
    return values, idx.astype(np.dtype(index_dtype(flat.size)))


# ------------------------------------------------------------------------------------------------- decode
def decode_lossy(tensors: Tensors, codec: str, like: Tensors) -> dict[str, npt.NDArray[Any]]:
    """Rebuild the model-shaped tensors from a decoded ``codec`` payload, in ``like``'s dtypes.

    Total: the entry set must be exactly :func:`wire_specs` of ``like`` (names, dtypes, shapes); ``topk``
    indices strictly increasing and in range; an ``int8`` scale finite and not negative; every value finite
    in the model's dtype. Anything else raises a ``WireError``.
    """
    _check_names(like)
    specs = wire_specs(codec, like)
    expected = {name for name, _, _ in specs}
    extra = sorted(set(tensors) - expected)
    if extra:
        raise SchemaError(f"codec {codec}: unexpected tensor {extra[0]!r}")
    for name, dtype, shape in specs:
        arr = tensors.get(name)
        if arr is None:
            raise SchemaError(f"codec {codec}: tensor {name!r} is missing")
        if _wire_name(arr.dtype) != dtype:
            raise DtypeError(f"codec {codec}: tensor {name!r} must be {dtype}, got {arr.dtype}")
        if tuple(arr.shape) != shape:
            raise ShapeError(f"codec {codec}: tensor {name!r} must have shape {list(shape)}, got {arr.shape}")
    out: dict[str, npt.NDArray[Any]] = {}
    for name, model in like.items():
        if not _is_float(model):
            out[name] = np.asarray(tensors[name])
            continue
        target = model.dtype
        if codec == "int8":
            scale = float(tensors[name + SCALE])
            if not scale >= 0:
                raise SchemaError(f"codec int8: tensor {name!r} has a negative scale")
            with np.errstate(all="ignore"):
                values = tensors[name].astype(target) * target.type(scale)
        else:
            values = _scatter(name, tensors[name], tensors[name + INDEX], model.size, target)
        values = values.reshape(model.shape)
        if not _all_finite(values):
            raise NonFiniteError(f"tensor {name!r}: a value overflows the model's {target}")
        out[name] = values
    return out


def _scatter(
    name: str, values: npt.NDArray[Any], idx: npt.NDArray[Any], size: int, target: np.dtype[Any]
) -> npt.NDArray[Any]:
    pos = idx.astype(np.int64)
    if pos.size and (pos[0] < 0 or pos[-1] >= size or not bool(np.all(np.diff(pos) > 0))):
        raise SchemaError(f"codec topk: indices of {name!r} must be strictly increasing and below {size}")
    dense = np.zeros(size, dtype=target)
    with np.errstate(all="ignore"):
        dense[pos] = values.astype(target)
    return dense


# -------------------------------------------------------------------------------------------- feedback
def feedback_step(
    target: npt.NDArray[np.float32], reference: npt.NDArray[np.float32], compress: Any
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """One error-feedback step on flat vectors: send ``compress(target - reference)`` and return
    (what was sent, decoded; the receivers' new reference). The residual ``target - new reference`` is
    what the next step sends again, so nothing a codec drops is lost, only delayed.

    ``compress`` maps a flat float32 delta to its decoded (lossy) version. The engine does exactly this with
    its ``public`` model as the reference.
    """
    sent = np.asarray(compress(target - reference), dtype=np.float32)
    return sent, (reference + sent).astype(np.float32)
