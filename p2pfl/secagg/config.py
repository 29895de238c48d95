"""``[secagg]``: the secure-aggregation group a peer belongs to (docs/secagg.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from p2pfl.errors import ConfigError, P2PFLError
from p2pfl.identity import public_key_from_peer_id
from p2pfl.secagg.errors import SecAggError
from p2pfl.secagg.fixedpoint import FixedPoint
from p2pfl.secagg.spec import GroupSpec


@dataclass(frozen=True)
class SecAggConfig:
    """Off by default. With ``enabled``, ``members`` (peer ids, this peer among them) average their trained
    models by secure aggregation each round, and only that mean leaves each member.

    ``threshold``: how many members must stay to the end of a group round (0: a bare majority,
    ``n // 2 + 1``, e.g. 5 of 8). ``scale_bits`` and ``bound``: the fixed-point encoding (inputs clipped to
    ``[-bound, bound]``; error of the mean at most ``0.5 / 2^scale_bits + bound * 2^-24`` per coordinate).
    ``advertise_timeout_s`` bounds the wait for the slowest member's training, ``phase_timeout_s`` each later
    phase."""

    enabled: bool = False
    members: tuple[str, ...] = ()
    threshold: int = 0
    scale_bits: int = 20
    bound: float = 16.0
    advertise_timeout_s: float = 30.0
    phase_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError("secagg", "enabled", f"must be true or false, got {self.enabled!r}")
        if not isinstance(self.members, list | tuple) or not all(isinstance(m, str) for m in self.members):
            raise ConfigError("secagg", "members", "must be a list of peer ids")
        object.__setattr__(self, "members", tuple(sorted(self.members)))
        for m in self.members:
            try:
                public_key_from_peer_id(m)
            except P2PFLError as exc:
                raise ConfigError("secagg", "members", str(exc)) from None
        for name in ("threshold", "scale_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError("secagg", name, f"must be an integer >= 0, got {value!r}")
        for name in ("bound", "advertise_timeout_s", "phase_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError("secagg", name, f"must be a positive number, got {value!r}")
        if self.enabled:
            try:
                self.spec("check", 1)
            except SecAggError as exc:
                key = {"overflow": "bound", "not_member": "members"}.get(exc.reason, "threshold")
                raise ConfigError("secagg", key, str(exc)) from None

    @property
    def group_threshold(self) -> int:
        return self.threshold or len(self.members) // 2 + 1

    def spec(self, network_id: str, dim: int) -> GroupSpec:
        """The group of this config for vectors of ``dim`` (raises ``SecAggError`` if it cannot exist)."""
        return GroupSpec(
            network_id,
            self.members,
            self.group_threshold,
            dim,
            fixed=FixedPoint(self.scale_bits, float(self.bound)),
            advertise_timeout_s=float(self.advertise_timeout_s),
            phase_timeout_s=float(self.phase_timeout_s),
        )
