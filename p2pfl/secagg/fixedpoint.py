"""Fixed-point encoding of float32 vectors into the ring Z/2^32 (what the masks are added in).

A value ``x`` is clipped to ``[-bound, bound]`` and encoded as ``round(x * 2^scale_bits) mod 2^32``. The sum
of ``n`` encodings decodes exactly (as a signed 32-bit integer) as long as ``n * bound * 2^scale_bits <
2^31``: :meth:`FixedPoint.check_members` refuses a group for which that does not hold, so with clipping an
overflow cannot happen; without the check a sum would wrap around silently and decode to garbage.

Error of the decoded mean against the exact (float64) mean of the clipped float32 inputs, per coordinate:
at most ``0.5 / 2^scale_bits`` from rounding (each member's rounding error is at most that, so is their
average) plus ``bound * 2^-24`` from storing the result as float32 (:meth:`FixedPoint.max_error`).
Clipping itself is not an error of the protocol but a stated bound on inputs: values beyond ``bound`` are
moved to it (and counted), so a member cannot push the mean further than ``bound / n`` per coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from p2pfl.secagg.errors import SecAggError

RING_BITS = 32
Ring = npt.NDArray[np.uint32]


@dataclass(frozen=True)
class FixedPoint:
    """The encoding: ``scale_bits`` fractional bits, inputs clipped to ``[-bound, bound]``."""

    scale_bits: int = 20
    bound: float = 16.0

    def __post_init__(self) -> None:
        if not 0 <= self.scale_bits <= 30:
            raise SecAggError("overflow", f"scale_bits must be in [0, 30], got {self.scale_bits}")
        if not (np.isfinite(self.bound) and self.bound > 0):
            raise SecAggError("overflow", f"bound must be a positive finite number, got {self.bound}")
        self.check_members(1)

    @property
    def scale(self) -> float:
        return float(1 << self.scale_bits)

    def max_members(self) -> int:
        """The largest group whose sum cannot overflow the signed 32-bit range."""
        return int(((1 << (RING_BITS - 1)) - 1) // (self.bound * self.scale + 1))

    def check_members(self, members: int) -> None:
        """Raise ``SecAggError('overflow')`` if the sum of ``members`` clipped inputs could wrap around."""
        if members * (self.bound * self.scale + 1) >= 1 << (RING_BITS - 1):
            raise SecAggError(
                "overflow",
                f"{members} members x bound {self.bound} x 2^{self.scale_bits} does not fit 31 bits: "
                "lower scale_bits or bound",
            )

    def max_error(self) -> float:
        """Largest per-coordinate difference between the decoded mean and the exact mean of the clipped
        inputs."""
        return 0.5 / self.scale + self.bound * 2.0**-24

    def encode(self, vec: npt.NDArray[np.floating]) -> tuple[Ring, int]:
        """The ring encoding of ``vec`` and how many coordinates were clipped (non-finite ones included:
        NaN becomes 0, +-inf the bound)."""
        x = np.asarray(vec, dtype=np.float64)
        finite = np.isfinite(x)
        clipped = int(np.count_nonzero(~finite) + np.count_nonzero(np.abs(x[finite]) > self.bound))
        x = np.clip(np.nan_to_num(x, nan=0.0, posinf=self.bound, neginf=-self.bound), -self.bound, self.bound)
        ints = np.rint(x * self.scale).astype(np.int64)
        return ints.astype(np.uint32), clipped  # two's complement: the value mod 2^32

    def decode_mean(self, total: Ring, count: int) -> npt.NDArray[np.float32]:
        """The mean of ``count`` inputs whose encodings sum (mod 2^32) to ``total``."""
        if count <= 0:
            raise SecAggError("below_threshold", "a mean of no inputs")
        self.check_members(count)
        signed = np.asarray(total, dtype=np.uint32).view(np.int32).astype(np.float64)
        return (signed / (self.scale * count)).astype(np.float32)
