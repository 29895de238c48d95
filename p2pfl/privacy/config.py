"""``[privacy]``: the differential-privacy settings of a peer (docs/privacy.md).

Off by default in :class:`~p2pfl.config.PeerConfig` (embedding, tests, simulations); ``p2pfl init`` writes a
peer config with record-level DP on and a stated budget, because a production peer's published models are the
one thing that leaves its organisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from p2pfl.errors import ConfigError

MODES: Final = ("off", "record", "peer")
ACCOUNTANTS: Final = ("rdp", "pld")
#: the largest budget a config may state: beyond it a "guarantee" says nothing (e^50 likelihood ratio)
MAX_EPSILON: Final = 50.0
#: noise multipliers outside this range are a typo, not a setting
NOISE_RANGE: Final = (0.05, 10_000.0)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class PrivacyConfig:
    """What a peer promises about its training data, and how it keeps the promise.

    ``mode``: ``off``; ``record`` (DP-SGD in local training: each training record's influence is clipped to
    ``clip_norm`` per step and Gaussian noise of ``noise_multiplier * clip_norm`` is added, Poisson-sampled
    batches; protects one record); ``peer`` (each published delta is clipped to ``clip_norm`` and gets
    Gaussian noise of ``noise_multiplier * clip_norm``; protects the peer's whole data set).

    The budget is ``epsilon`` at ``delta``. Give ``epsilon`` and ``rounds`` and the peer calibrates the noise
    so that exactly ``rounds`` published rounds spend it; or give ``noise_multiplier`` (and optionally
    ``epsilon``): the peer then publishes as long as the next round stays within ``epsilon`` (without an
    ``epsilon`` it only tracks what it spent). Once the budget is spent the peer stops publishing and keeps
    learning from its neighbours.
    """

    mode: str = "off"
    epsilon: float | None = None
    delta: float = 1e-5
    noise_multiplier: float | None = None
    clip_norm: float = 1.0
    #: rounds the budget is planned for (needed to calibrate the noise from ``epsilon``)
    rounds: int | None = None
    #: ``rdp`` (Rényi DP, fast) or ``pld`` (privacy loss distributions, tighter, slower); both dp-accounting's
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError("privacy", "mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.accountant not in ACCOUNTANTS:
            got = self.accountant
            raise ConfigError(
                "privacy", "accountant", f"must be one of {', '.join(ACCOUNTANTS)}, got {got!r}"
            )
        if self.epsilon is not None and (
            not _number(self.epsilon) or not 0 < self.epsilon <= MAX_EPSILON or math.isnan(self.epsilon)
        ):
            raise ConfigError(
                "privacy", "epsilon", f"must be a number in (0, {MAX_EPSILON}], got {self.epsilon!r}"
            )
        if not _number(self.delta) or not 0 < self.delta < 1:
            raise ConfigError("privacy", "delta", f"must be a number in (0, 1), got {self.delta!r}")
        if self.noise_multiplier is not None:
            lo, hi = NOISE_RANGE
            sigma = self.noise_multiplier
            if not _number(sigma) or not lo <= sigma <= hi:
                raise ConfigError(
                    "privacy", "noise_multiplier", f"must be a number in [{lo}, {hi}], got {sigma!r}"
                )
        if not _number(self.clip_norm) or not 0 < self.clip_norm < math.inf:
            raise ConfigError("privacy", "clip_norm", f"must be a positive number, got {self.clip_norm!r}")
        if self.rounds is not None and (
            not isinstance(self.rounds, int) or isinstance(self.rounds, bool) or not 1 <= self.rounds <= 10**7
        ):
            raise ConfigError("privacy", "rounds", f"must be an integer in 1..10000000, got {self.rounds!r}")
        if self.mode == "off":
            return
        if self.epsilon is None and self.noise_multiplier is None:
            raise ConfigError(
                "privacy", "epsilon", f"required with mode = {self.mode!r} (or give noise_multiplier)"
            )
        if self.noise_multiplier is None and self.rounds is None:
            raise ConfigError(
                "privacy",
                "rounds",
                "required to calibrate the noise for epsilon (the rounds the budget must last), "
                "or give noise_multiplier",
            )
        if self.delta > 1e-3:
            raise ConfigError(
                "privacy",
                "delta",
                f"must be at most 1e-3 with DP on (a chance of failure), got {self.delta!r}",
            )

    @property
    def enabled(self) -> bool:
        return self.mode != "off"
