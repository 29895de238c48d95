"""The privacy accounting of a peer, done by Google's ``dp-accounting`` library (never by our own maths).

A *round* is what a peer does between two published versions. Its privacy cost is one dp-accounting event:

* ``record`` level (DP-SGD): ``steps`` Poisson-sampled Gaussian steps (each record is in a step's batch
  with probability ``sample_rate``; its gradient is clipped to ``C``; the sum gets ``N(0, (sigma*C)^2)``),
  under the add-or-remove-one-record relation, which is what Poisson sampling is analysed under;
* ``peer`` level: one Gaussian mechanism on the published delta. The delta is clipped to ``C`` and gets
  ``N(0, (sigma*C)^2)`` per coordinate; replacing the peer's whole data set moves a clipped delta by up to
  ``2C``, so the event is ``GaussianDpEvent(sigma / 2)`` (sensitivity 2C in units of the noise).

Rounds compose; :func:`epsilon` asks the accountant for the epsilon of ``rounds`` rounds at ``delta``, and
:func:`calibrate` asks dp-accounting's ``calibrate_dp_mechanism`` for the smallest noise multiplier that keeps
``rounds`` rounds within a target epsilon. dp-accounting is imported on first use (about 1 s of import time:
scipy), so a peer without DP never pays for it.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from p2pfl.errors import ConfigError

if TYPE_CHECKING:
    from dp_accounting import DpEvent, PrivacyAccountant

KINDS: Final = ("record", "peer")
#: Rényi orders of the RDP accountant: dp-accounting's default has 156 and costs ~0.2-0.8 s per epsilon on a
#: loaded 2-core machine; these 26 cost ~30-150 ms and give the same epsilon to within 3% (measured at
#: q = 0.1, sigma 0.7-3.3, 400-2000 steps), always as an upper bound (fewer orders can only raise it)
RDP_ORDERS: Final = (
    1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0,
    24.0, 28.0, 32.0, 48.0, 64.0, 128.0, 256.0,
)  # fmt: skip
#: PLD accountant's value discretisation (dp-accounting's default 1e-4 is slow for thousands of steps;
#: a coarser grid stays a valid, pessimistic upper bound)
PLD_DISCRETISATION: Final = 1e-3


@dataclass(frozen=True)
class Mechanism:
    """What one round of a peer does to its data, as the accountant sees it."""

    kind: str
    noise_multiplier: float
    #: record level: the Poisson sampling rate of a DP-SGD step (batch size / records); peer level: 1
    sample_rate: float = 1.0
    #: record level: DP-SGD steps per round; peer level: 1
    steps: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError("privacy", "mode", f"must be one of {KINDS} with DP on, got {self.kind!r}")
        if not self.noise_multiplier > 0 or not math.isfinite(self.noise_multiplier):
            got = self.noise_multiplier
            raise ConfigError("privacy", "noise_multiplier", f"must be a positive number, got {got!r}")
        if not 0 < self.sample_rate <= 1:
            got = self.sample_rate
            raise ConfigError(
                "privacy", "sample_rate", f"must be in (0, 1] (batch size / records), got {got!r}"
            )
        if self.steps < 1:
            raise ConfigError("peer", "local_steps", f"must be >= 1, got {self.steps!r}")

    def round_event(self) -> DpEvent:
        """The dp-accounting event of one round."""
        import dp_accounting as dpa

        if self.kind == "record":
            step = dpa.PoissonSampledDpEvent(self.sample_rate, dpa.GaussianDpEvent(self.noise_multiplier))
            return dpa.SelfComposedDpEvent(step, self.steps)
        return dpa.GaussianDpEvent(self.noise_multiplier / 2.0)

    def with_noise(self, noise_multiplier: float) -> Mechanism:
        return Mechanism(self.kind, noise_multiplier, self.sample_rate, self.steps)


def _quiet_orders(record: logging.LogRecord) -> bool:
    """dp-accounting logs (via absl) each fractional order whose series does not converge and then leaves that
    order out, which can only raise epsilon: expected, not worth a warning per round."""
    return "failed to converge" not in record.getMessage()


def make_accountant(kind: str = "rdp") -> PrivacyAccountant:
    """A fresh dp-accounting accountant: ``rdp`` (RdpAccountant) or ``pld`` (PLDAccountant)."""
    import dp_accounting as dpa

    absl = logging.getLogger("absl")
    if _quiet_orders not in absl.filters:
        absl.addFilter(_quiet_orders)

    if kind == "rdp":
        return dpa.rdp.RdpAccountant(orders=list(RDP_ORDERS))
    if kind == "pld":
        return dpa.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETISATION)
    raise ConfigError("privacy", "accountant", f"must be 'rdp' or 'pld', got {kind!r}")


def epsilon(mechanism: Mechanism, rounds: int, delta: float, accountant: str = "rdp") -> float:
    """The epsilon (at ``delta``) of ``rounds`` rounds of ``mechanism``; 0 for no round."""
    if rounds < 0:
        raise ConfigError("privacy", "rounds", f"must be >= 0, got {rounds}")
    if rounds == 0:
        return 0.0
    return _epsilon(mechanism, rounds, delta, accountant)


@functools.lru_cache(maxsize=4096)
def _epsilon(mechanism: Mechanism, rounds: int, delta: float, accountant: str) -> float:
    acc = make_accountant(accountant)
    acc.compose(mechanism.round_event(), rounds)
    return float(acc.get_epsilon(delta))


def calibrate(
    mechanism: Mechanism, target_epsilon: float, delta: float, rounds: int, accountant: str = "rdp"
) -> float:
    """The smallest noise multiplier (to dp-accounting's tolerance) with which ``rounds`` rounds of
    ``mechanism`` stay within ``target_epsilon`` at ``delta``; ``mechanism``'s own multiplier is ignored.

    Raises ``ConfigError`` (``[privacy] epsilon``) when no noise reaches the target (it cannot, e.g., for a
    delta so large that even infinite noise leaves epsilon above the target)."""
    import dp_accounting as dpa

    def event(sigma: float) -> Any:
        return dpa.SelfComposedDpEvent(mechanism.with_noise(sigma).round_event(), rounds)

    bracket: Any = dpa.LowerEndpointAndGuess(1e-3, 1.0)
    if accountant == "pld":
        bracket = _pld_bracket(mechanism, target_epsilon, delta, rounds) or bracket
    try:
        sigma = dpa.calibrate_dp_mechanism(
            lambda: make_accountant(accountant),
            event,
            target_epsilon,
            delta,
            bracket_interval=bracket,
            tol=1e-4,
        )
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise ConfigError(
            "privacy",
            "epsilon",
            f"no noise multiplier reaches epsilon={target_epsilon} at delta={delta}: {exc}",
        ) from None
    return float(sigma)


def _pld_bracket(mechanism: Mechanism, target_epsilon: float, delta: float, rounds: int) -> Any | None:
    """A bracket for the PLD calibration, from the RDP one: RDP's epsilon bounds PLD's from above, so RDP's
    sigma is an upper end. Searching from dp-accounting's generic lower end (sigma 1e-3) instead makes the PLD
    accountant build privacy-loss distributions so wide that one calibration ran past 10 minutes at 1,600
    sampled steps. None when the ends do not enclose the target (then the generic search is used)."""
    import dp_accounting as dpa

    try:
        high = calibrate(mechanism, target_epsilon, delta, rounds, "rdp")
    except ConfigError:
        return None
    if epsilon(mechanism.with_noise(high), rounds, delta, "pld") > target_epsilon:
        return None
    low = high
    for _ in range(6):  # at most 64x below RDP's sigma; PLD is never that much tighter in practice
        low /= 2.0
        if epsilon(mechanism.with_noise(low), rounds, delta, "pld") > target_epsilon:
            return dpa.ExplicitBracketInterval(low, high)
    return None
