"""Hypothesis strategies shared across the test suite (wire and identity)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from p2pfl.wire import DTYPES

WIRE_DTYPES = sorted(DTYPES)

tensor_names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24
)


@st.composite
def tensors(draw: st.DrawFn, dtype: str | None = None) -> npt.NDArray[Any]:
    name = draw(st.sampled_from(WIRE_DTYPES)) if dtype is None else dtype
    np_dtype = DTYPES[name]
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    elements = (
        st.floats(allow_nan=False, allow_infinity=False, width=8 * np_dtype.itemsize)
        if np_dtype.kind == "f"
        else None
    )
    return draw(hnp.arrays(np_dtype, shape, elements=elements))


tensor_dicts = st.dictionaries(tensor_names, tensors(), min_size=0, max_size=6)
float_tensor_dicts = st.dictionaries(tensor_names, tensors("float32"), min_size=1, max_size=4)
seeds = st.binary(min_size=32, max_size=32)


def assert_tensors_equal(expected: dict[str, npt.NDArray[Any]], actual: dict[str, npt.NDArray[Any]]) -> None:
    assert sorted(expected) == sorted(actual)
    for name, arr in expected.items():
        got = actual[name]
        assert arr.shape == got.shape, name
        assert np.dtype(arr.dtype).newbyteorder("<") == got.dtype, name
        assert arr.tobytes() == np.ascontiguousarray(got).astype(arr.dtype).tobytes(), name


# ------------------------------------------------------------------------ non-canonical msgpack encodings

#: Every msgpack form a value may legally take, shortest first: (max value/length exclusive, prefix byte,
#: length-field width). ``None`` prefix = the fix form, whose length is folded into the type byte.
_UINT_FORMS = (
    (1 << 7, None, 0),
    (1 << 8, 0xCC, 1),
    (1 << 16, 0xCD, 2),
    (1 << 32, 0xCE, 4),
    (1 << 64, 0xCF, 8),
)
_SINT_FORMS = ((1 << 7, 0xD0, 1), (1 << 15, 0xD1, 2), (1 << 31, 0xD2, 4), (1 << 63, 0xD3, 8))
_STR_FORMS = ((32, 0xA0, 0), (1 << 8, 0xD9, 1), (1 << 16, 0xDA, 2), (1 << 32, 0xDB, 4))
_BIN_FORMS = ((1 << 8, 0xC4, 1), (1 << 16, 0xC5, 2), (1 << 32, 0xC6, 4))
_ARRAY_FORMS = ((16, 0x90, 0), (1 << 16, 0xDC, 2), (1 << 32, 0xDD, 4))
_MAP_FORMS = ((16, 0x80, 0), (1 << 16, 0xDE, 2), (1 << 32, 0xDF, 4))


def _sized(forms: tuple[tuple[int, int | None, int], ...], n: int, pick: int) -> bytes:
    """The type byte and length of form number ``pick`` among those that can hold ``n`` (0 = shortest)."""
    fitting = [f for f in forms if n < f[0]]
    _, tag, width = fitting[min(pick, len(fitting) - 1)]
    if width == 0:
        return bytes([(tag or 0) | n])
    return bytes([tag or 0]) + n.to_bytes(width, "big")


def loose_pack(obj: Any, picks: Callable[[], int]) -> bytes:
    """Pack ``obj`` as msgpack, letting ``picks()`` choose each value's form: 0 always gives exactly
    ``msgpack.packb(obj, use_bin_type=True)``; anything else may give a longer, still valid, encoding
    (wider integers and lengths, signed integer forms, float32 for floats float32 holds exactly)."""
    if obj is None or isinstance(obj, bool):
        return {None: b"\xc0", False: b"\xc2", True: b"\xc3"}[obj]
    if isinstance(obj, int):
        if obj < 0:
            return msgpack.packb(obj)  # type: ignore[no-any-return]
        forms = _UINT_FORMS + tuple(f for f in _SINT_FORMS if obj < f[0])
        pick = picks()
        fitting = [f for f in forms if obj < f[0]]
        _, tag, width = fitting[min(pick, len(fitting) - 1)]
        return bytes([obj]) if tag is None else bytes([tag]) + obj.to_bytes(width, "big")
    if isinstance(obj, float):
        if picks() and -3.4e38 < obj < 3.4e38 and struct.unpack(">f", struct.pack(">f", obj))[0] == obj:
            return b"\xca" + struct.pack(">f", obj)
        return b"\xcb" + struct.pack(">d", obj)
    if isinstance(obj, str):
        raw = obj.encode("utf-8")
        return _sized(_STR_FORMS, len(raw), picks()) + raw
    if isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        return _sized(_BIN_FORMS, len(raw), picks()) + raw
    if isinstance(obj, list | tuple):
        return _sized(_ARRAY_FORMS, len(obj), picks()) + b"".join(loose_pack(x, picks) for x in obj)
    if isinstance(obj, dict):
        head = _sized(_MAP_FORMS, len(obj), picks())
        return head + b"".join(loose_pack(k, picks) + loose_pack(v, picks) for k, v in obj.items())
    raise TypeError(f"loose_pack cannot pack {type(obj).__name__}")


@st.composite
def loose_encodings(draw: st.DrawFn, obj: Any) -> tuple[bytes, bool]:
    """(an encoding of ``obj``, whether some value took a longer form than the shortest). Half the draws
    are the canonical encoding; in the other half each value takes a longer form with probability 1/2."""
    widen = draw(st.booleans())

    def picks() -> int:
        return draw(st.sampled_from([0, 0, 0, 1, 2, 3])) if widen else 0

    data = loose_pack(obj, picks)
    return data, data != msgpack.packb(obj, use_bin_type=True)
