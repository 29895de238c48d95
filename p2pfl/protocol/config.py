"""The protocol's knobs, validated at construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pfl.errors import ConfigError
from p2pfl.protocol.freshness import MAX_CLOCK_SKEW_S, MAX_VERSION_AGE_S
from p2pfl.wire import Limits, is_codec, is_network_id

#: The longest eviction (unless ``readmit_after_s`` itself is longer): repeat offenders wait a day per try.
_MAX_BAN_S = 86_400.0


@dataclass(frozen=True)
class ProtocolConfig:
    """Protocol knobs; validated at construction (``ConfigError`` names the key)."""

    network_id: str
    inline_limit: int = 192 * 1024
    max_staleness_s: float = 120.0
    max_delta_norm: float | None = None
    codec: str = "raw"
    payload_cache: int = 32
    snapshot_retry_s: float = 5.0
    join_quorum: int = 2
    #: An eviction lasts this long (seconds), doubling with each repeat eviction of the same peer up to a day
    #: (or to this value, if longer); then the peer is readmitted on probation (``inf``: evictions are final).
    readmit_after_s: float = 1800.0
    #: a replica not moved on for this long is forgotten (p2pfl.protocol.idle); ``None``: ten times
    #: ``max_staleness_s``
    forget_after_s: float | None = None
    #: a gossiped delta signed more than this long ago by the receiver's clock is refused
    #: (``stale_timestamp``; p2pfl.protocol.freshness); ``inf``: no age limit. Must exceed the skew below.
    max_version_age_s: float = MAX_VERSION_AGE_S
    #: ... and one signed more than this far in the future (``future_timestamp``): the clock error tolerated
    max_clock_skew_s: float = MAX_CLOCK_SKEW_S
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not is_network_id(self.network_id):
            raise ConfigError(
                f"network_id: must be 1-64 characters of [A-Za-z0-9._-], got {self.network_id!r}"
            )
        if not isinstance(self.inline_limit, int) or self.inline_limit < 0:
            raise ConfigError(f"protocol.inline_limit: must be an integer >= 0, got {self.inline_limit!r}")
        for name in ("max_staleness_s", "snapshot_retry_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"protocol.{name}: must be a positive number, got {value!r}")
        if self.max_delta_norm is not None and not (
            isinstance(self.max_delta_norm, int | float) and self.max_delta_norm > 0
        ):
            raise ConfigError(
                f"protocol.max_delta_norm: must be positive or unset, got {self.max_delta_norm!r}"
            )
        if not isinstance(self.readmit_after_s, int | float) or not self.readmit_after_s > 0:
            raise ConfigError(
                "protocol.readmit_after_s: must be a positive number (inf: never), "
                f"got {self.readmit_after_s!r}"
            )
        if self.forget_after_s is not None and not (
            isinstance(self.forget_after_s, int | float) and self.forget_after_s >= self.max_staleness_s
        ):
            raise ConfigError(
                "protocol.forget_after_s: must be a number >= max_staleness_s or unset, "
                f"got {self.forget_after_s!r}"
            )
        self._check_freshness()
        if not is_codec(self.codec):
            raise ConfigError(
                f"protocol.codec: must be 'raw', 'fp16', 'int8' or 'topk:<density>' (e.g. topk:0.1), "
                f"got {self.codec!r}"
            )
        if not isinstance(self.payload_cache, int) or self.payload_cache < 1:
            raise ConfigError(f"protocol.payload_cache: must be an integer >= 1, got {self.payload_cache!r}")
        if not isinstance(self.join_quorum, int) or self.join_quorum < 1:
            raise ConfigError(f"protocol.join_quorum: must be an integer >= 1, got {self.join_quorum!r}")

    def _check_freshness(self) -> None:
        skew, age = self.max_clock_skew_s, self.max_version_age_s
        if isinstance(skew, bool) or not isinstance(skew, int | float) or not 0 < skew < float("inf"):
            raise ConfigError(f"protocol.max_clock_skew_s: must be a positive number, got {skew!r}")
        if isinstance(age, bool) or not isinstance(age, int | float) or not age > skew:
            raise ConfigError(
                "protocol.max_version_age_s: must be a number > max_clock_skew_s (inf: no limit), "
                f"got {age!r} with max_clock_skew_s {skew!r}"
            )
