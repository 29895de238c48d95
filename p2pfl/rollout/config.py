"""``[rollout]``: how a peer moves a new own version in front of its host application."""

from __future__ import annotations

import math
from dataclasses import dataclass

from p2pfl.errors import ConfigError


@dataclass(frozen=True)
class RolloutConfig:
    """The rollout policy's knobs (docs/rollout.md). Off by default: the peer then serves its newest version.

    With ``enabled``, a candidate (the newest own version when none is under test) is compared with the
    serving version on the validation split plus the host's labelled feedback once per round:
    ``shadow_rounds`` rounds in shadow (evaluated, never served), then canary (served to
    ``canary_fraction`` of the request keys) until it passed ``promote_after`` canary rounds. Every round
    it must keep ``ΔAUC >= min_delta_auc`` and ``ΔF1 >= min_delta_f1``; one round below either demotes it
    (a canary's traffic goes back to the serving version). Thresholds of 0 mean: never worse than what is
    served.
    """

    enabled: bool = False
    shadow_rounds: int = 3
    canary_fraction: float = 0.1
    promote_after: int = 3
    min_delta_auc: float = 0.0
    min_delta_f1: float = 0.0
    #: compare each new own version with this fixed version (its seq) instead of the serving one; the version
    #: must be the serving one when it is first seen, so its model is kept (see docs/rollout.md)
    base_seq: int | None = None
    #: labelled feedback samples kept (the newest); older ones are dropped
    feedback_limit: int = 10_000

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError("rollout", "enabled", f"must be true or false, got {self.enabled!r}")
        for name in ("shadow_rounds", "promote_after", "feedback_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError("rollout", name, f"must be an integer >= 0, got {value!r}")
        if self.promote_after < 1:
            raise ConfigError("rollout", "promote_after", f"must be >= 1, got {self.promote_after!r}")
        if not isinstance(self.canary_fraction, int | float) or not 0 <= self.canary_fraction <= 1:
            got = self.canary_fraction
            raise ConfigError("rollout", "canary_fraction", f"must be in [0, 1], got {got!r}")
        for name in ("min_delta_auc", "min_delta_f1"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or not -1 <= value <= 1:
                raise ConfigError("rollout", name, f"must be a number in [-1, 1], got {value!r}")
        if self.base_seq is not None and (
            not isinstance(self.base_seq, int) or isinstance(self.base_seq, bool) or self.base_seq < 1
        ):
            raise ConfigError("rollout", "base_seq", f"must be a version number >= 1, got {self.base_seq!r}")
