"""The one check the scoring configs share: a config value that is a real, finite number (not a bool)."""

from __future__ import annotations

import math

__all__ = ["is_real"]


def is_real(value: object) -> bool:
    """Whether ``value`` is a finite int or float; ``True``/``False`` are not numbers here."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
