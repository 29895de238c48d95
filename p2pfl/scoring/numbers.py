"""What the scoring modules share of plain numbers: a config value that is a real, finite number (not a
bool), and the coordinate-wise median of a few rows."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = ["is_real", "median_rows"]


def is_real(value: object) -> bool:
    """Whether ``value`` is a finite int or float; ``True``/``False`` are not numbers here."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def median_rows(stack: NDArray[np.float64]) -> NDArray[np.float64]:
    """``np.median(stack, axis=0)``, the same values, through one partition (np.median's own overhead was most
    of the cost of the heading signal and the neighbourhood ratios on small models: issue 17's per-peer-round
    budget). A partition sorts NaN last instead of answering NaN: such input goes to np.median itself."""
    if np.isnan(stack).any():
        nan: NDArray[np.float64] = np.median(stack, axis=0)
        return nan
    n = stack.shape[0]
    half = n // 2
    if n % 2:
        mid: NDArray[np.float64] = np.partition(stack, half, axis=0)[half]
        return mid
    part = np.partition(stack, (half - 1, half), axis=0)
    both: NDArray[np.float64] = (part[half - 1] + part[half]) / 2.0
    return both
