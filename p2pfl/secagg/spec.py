"""What every member of a group agrees on before a round: members, threshold, encoding, timeouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from p2pfl.secagg.errors import SecAggError
from p2pfl.secagg.fixedpoint import FixedPoint
from p2pfl.secagg.messages import group_id
from p2pfl.secagg.shamir import MAX_SHARES


@dataclass(frozen=True)
class GroupSpec:
    """A secure-aggregation group. ``members`` are peer ids (kept sorted: a member's index is its place);
    ``threshold`` is how many members must survive every phase (and how many shares rebuild a secret);
    ``dim`` is the length of the vectors averaged."""

    network_id: str
    members: tuple[str, ...]
    threshold: int
    dim: int
    fixed: FixedPoint = field(default_factory=FixedPoint)
    #: how long a member waits for the others' key adverts (covers their training time)
    advertise_timeout_s: float = 30.0
    #: how long each later phase waits for the others' messages
    phase_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(sorted(self.members)))
        n = len(self.members)
        if len(set(self.members)) != n:
            raise SecAggError("not_member", "a member is listed twice")
        if not 2 <= n <= MAX_SHARES:
            raise SecAggError("below_threshold", f"a group has 2..{MAX_SHARES} members, got {n}")
        if not n // 2 < self.threshold <= n:
            # more than half: two disjoint halves could otherwise each rebuild a different kind of secret
            raise SecAggError(
                "below_threshold", f"threshold must be in ({n // 2}, {n}], got {self.threshold}"
            )
        if self.dim < 1:
            raise SecAggError("malformed", "dim must be positive")
        self.fixed.check_members(n)

    @cached_property
    def group(self) -> bytes:
        return group_id(self.network_id, self.members, self.threshold)

    def index(self, peer_id: str) -> int:
        try:
            return self.members.index(peer_id)
        except ValueError:
            raise SecAggError("not_member", f"{peer_id[:16]} is not a member of the group") from None
