"""Size caps of the decoders: checked before (envelope, header) or while (tensors) decoding, so no input can
make a decoder allocate more than the caps allow, and no shape that passes them can make numpy raise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

_NUMPY_MAX_NDIM: Final = 32
_NUMPY_MAX_ELEMENTS: Final = 1 << 48


@dataclass(frozen=True)
class Limits:
    """Size caps, enforced before (envelope) or while (tensors) decoding."""

    max_envelope: int = 256 * 1024 * 1024
    max_header: int = 4096
    max_tensors: int = 4096
    max_name: int = 256
    max_ndim: int = 8
    max_elements: int = 1 << 31

    def __post_init__(self) -> None:
        for name in ("max_envelope", "max_header", "max_tensors", "max_name", "max_ndim", "max_elements"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")
        # numpy's own bounds, so no shape that passes the limits can make numpy raise
        if self.max_ndim > _NUMPY_MAX_NDIM:
            raise ValueError(f"Limits.max_ndim must be at most {_NUMPY_MAX_NDIM}, got {self.max_ndim}")
        if self.max_elements > _NUMPY_MAX_ELEMENTS:
            raise ValueError(f"Limits.max_elements must be at most 2**48, got {self.max_elements}")


DEFAULT_LIMITS: Final = Limits()
