"""Hypothesis strategies shared across the test suite (wire and identity)."""

from __future__ import annotations

from typing import Any

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
