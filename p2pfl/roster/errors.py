"""The roster's one error type: every refusal of a roster or certificate carries a reason slug."""

from __future__ import annotations

from p2pfl.errors import P2PFLError


class RosterError(P2PFLError):
    """A roster or member certificate is malformed, badly signed, for another network, expired, or would be
    a replay; ``reason`` is the slug it is counted and reported under (``docs/membership.md`` lists them)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)
