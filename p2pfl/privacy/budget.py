"""The privacy budget of a peer: epsilon spent after each published round, and when it is spent (pure logic).

The count of published rounds is the peer's public version number (``seq``): every published version is one
round of the mechanism, and the engine's ``seq`` survives restarts in the checkpoint, so a restarted peer
resumes its budget where it stopped without a file of its own. (A peer that turned DP on after publishing
without it counts those versions too: its epsilon is then overstated, never understated.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from p2pfl.errors import StateError
from p2pfl.privacy.accountant import Mechanism, epsilon


@dataclass(frozen=True)
class PrivacyBudget:
    """``budget`` epsilon (``None``: unlimited, only tracked) at ``delta`` for rounds of ``mechanism``."""

    mechanism: Mechanism
    delta: float
    budget: float | None
    accountant: str = "rdp"

    def spent(self, rounds: int) -> float:
        """Epsilon spent after ``rounds`` published rounds (dp-accounting's accountant; cached)."""
        return epsilon(self.mechanism, rounds, self.delta, self.accountant)

    def may_publish(self, rounds: int) -> bool:
        """Whether one more round after ``rounds`` published ones stays within the budget."""
        return self.budget is None or self.spent(rounds + 1) <= self.budget

    def rounds_left(self, rounds: int, horizon: int = 1_000_000) -> int | None:
        """How many more rounds fit in the budget after ``rounds`` (None: unlimited); bisection on the
        accountant's (monotone) epsilon, searched up to ``horizon`` rounds."""
        if self.budget is None:
            return None
        lo, hi = (
            rounds,
            rounds + horizon,
        )  # spent(lo) <= budget assumed; find the last n with spent(n) <= budget
        if not self.may_publish(rounds):
            return 0
        if self.spent(hi) <= self.budget:
            return horizon
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.spent(mid) <= self.budget:
                lo = mid
            else:
                hi = mid
        return lo - rounds

    def check_publish(self, rounds: int) -> float:
        """The epsilon after publishing round ``rounds + 1``; raises ``StateError`` if that would exceed the
        budget (the caller asked :meth:`may_publish` first: this is the last line of defence)."""
        after = self.spent(rounds + 1)
        if self.budget is not None and not after <= self.budget:
            raise StateError(
                f"privacy budget spent: round {rounds + 1} would reach epsilon {after:.4f} > {self.budget}"
            )
        if not math.isfinite(after):
            raise StateError(f"privacy accountant returned epsilon {after} for round {rounds + 1}")
        return after
