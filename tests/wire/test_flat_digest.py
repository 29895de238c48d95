"""``Layout.digest``'s fast path (:class:`p2pfl.wire.tensors.FlatDigest`: framing built once) hashes exactly
``encode_tensors``' bytes, and refuses (falls back, raising as before) whatever it cannot vouch for."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.protocol.layout import Layout
from p2pfl.wire import NonFiniteError, encode_tensors, model_digest
from p2pfl.wire.tensors import FlatDigest

names = st.lists(st.text(min_size=1, max_size=6), min_size=0, max_size=5, unique=True)
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@settings(max_examples=150, deadline=None)
@given(names, st.data())
def test_flat_digest_is_the_digest_of_the_canonical_payload(
    model_names: list[str], data: st.DataObject
) -> None:
    params = {n: np.zeros(data.draw(shapes), np.float32) for n in model_names}
    layout = Layout.of(params)
    seed = data.draw(st.integers(0, 2**32 - 1))
    vec = (np.random.default_rng(seed).normal(size=layout.size) * 1e3).astype(np.float32)
    tensors = layout.unflatten(vec)
    want = hashlib.blake2b(encode_tensors(tensors), digest_size=32).digest()
    assert layout.digest(vec) == want == model_digest(tensors)
    assert FlatDigest(layout.names, layout.shapes)(vec) == want
    if layout.size:
        changed = vec.copy()
        i = data.draw(st.integers(0, layout.size - 1))
        changed[i] = np.nextafter(changed[i], np.float32(np.inf))
        assert layout.digest(changed) != want
        assert layout.digest(changed) == model_digest(layout.unflatten(changed))


def test_non_finite_or_foreign_vectors_take_the_general_path() -> None:
    layout = Layout.of({"b": np.zeros(3, np.float32), "a": np.zeros((2, 2), np.float32)})
    fast = FlatDigest(layout.names, layout.shapes)
    vec = np.arange(7, dtype=np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        v = vec.copy()
        v[5] = bad
        assert fast(v) is None
        with pytest.raises(NonFiniteError, match="'b'"):
            layout.digest(v)  # as model_digest raises it
    assert fast(vec.astype(np.float64)) is None
    assert fast(vec.astype(">f4")) is None
    assert fast(np.arange(14, dtype=np.float32)[::2]) is None  # not contiguous
    assert fast(vec[:6]) is None
    assert layout.digest(vec.astype(">f4")) == layout.digest(vec)  # the general path converts
    # names not in canonical (UTF-8) order: never the fast path
    assert FlatDigest(("b", "a"), ((3,), (2, 2)))(vec) is None
