"""Hypothesis strategies for the aggregation and scoring tests."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

F32 = npt.NDArray[np.float32]

# Values that make ties, signed zeros, tiny and huge magnitudes likely, next to ordinary floats.
SPECIAL = (0.0, -0.0, 1.0, -1.0, 1e-38, -1e-38, 3e38, -3e38, 3.4028235e38, -3.4028235e38)

finite_f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
special_f32 = st.sampled_from(SPECIAL)
moderate_f32 = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)


@st.composite
def stacks(
    draw: st.DrawFn,
    min_k: int = 1,
    max_k: int = 12,
    max_d: int = 6,
    elements: st.SearchStrategy[float] | None = None,
) -> F32:
    """A ``(k, d)`` float32 stack: ordinary, special (ties, huge, tiny) or mixed values."""
    k = draw(st.integers(min_k, max_k))
    d = draw(st.integers(1, max_d))
    elems = (
        elements
        if elements is not None
        else st.one_of(finite_f32, special_f32, st.integers(-3, 3).map(float))
    )
    return draw(hnp.arrays(np.float32, (k, d), elements=elems))


@st.composite
def honest_and_bad(draw: st.DrawFn, max_k: int = 15, max_d: int = 5) -> tuple[F32, int]:
    """A stack whose first ``k - b`` rows are honest and last ``b < k/2`` rows arbitrary (``(stack, b)``)."""
    k = draw(st.integers(1, max_k))
    b = draw(st.integers(0, (k - 1) // 2))
    d = draw(st.integers(1, max_d))
    honest = draw(hnp.arrays(np.float32, (k - b, d), elements=moderate_f32))
    bad = draw(hnp.arrays(np.float32, (b, d), elements=st.one_of(finite_f32, special_f32)))
    return np.concatenate([honest, bad]).astype(np.float32), b


@st.composite
def clustered_with_outliers(draw: st.DrawFn) -> tuple[F32, int]:
    """Honest rows in a tight ball, ``f`` bad rows far from it; Krum must pick an honest one."""
    f = draw(st.integers(0, 3))
    k = draw(st.integers(2 * f + 3, 2 * f + 8))
    d = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    centre = rng.normal(0.0, 10.0, size=d)
    honest = centre + rng.normal(0.0, 0.1, size=(k - f, d))
    direction = rng.normal(size=(f, d))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    scale = draw(st.floats(min_value=5.0, max_value=1e6))
    bad = centre + direction * scale
    return np.concatenate([honest, bad]).astype(np.float32), f


def permutations_of(k: int) -> st.SearchStrategy[list[int]]:
    return st.permutations(list(range(k)))
