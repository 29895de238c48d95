"""The one error family of secure aggregation: :class:`SecAggError` with a stable ``reason`` slug.

Every rejected message, share or round raises (or is counted under) one of the slugs below; a remote input
never raises anything else. The slugs are what a group round counts its rejections by.
"""

from __future__ import annotations

from p2pfl.errors import P2PFLError

#: every reason slug, with what it means (docs/secagg.md repeats this table)
REASONS: dict[str, str] = {
    "malformed": "not the message's msgpack framing, a wrong type, a wrong length or a trailing byte",
    "oversize": "more bytes than the message kind allows",
    "version": "an unknown protocol version or message kind",
    "wrong_group": "a message for another group (group id differs)",
    "not_member": "the sender (or a named member) is not in the group",
    "bad_signature": "the sender's Ed25519 signature does not verify",
    "replay": "a message of an earlier round, or an exact copy of one already taken",
    "duplicate": "a second, different message of the same phase from the same sender",
    "wrong_recipient": "a point-to-point message addressed to another member",
    "late": "a message of a phase this member has already left",
    "wrong_round": "a message of a later round (a driver buffers those until it gets there)",
    "bad_share": "a share that does not decrypt, is not signed by its dealer, or has the wrong x",
    "inconsistent": "a member's view or mask set that contradicts this member's",
    "weak_key": "a public key that yields an all-zero X25519 secret (small-order point)",
    "below_threshold": "fewer than the threshold of members (or shares) are left: the round fails",
    "unrecoverable": "a secret reconstructed from shares does not match its commitment (bad dealing)",
    "overflow": "a vector or a group too large for the fixed-point ring",
    "closed": "the member's group channel closed (its peer is stopping): the round ends unfinished",
}


class SecAggError(P2PFLError):
    """A secure-aggregation input was rejected or a round cannot complete; ``reason`` is a slug of
    :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:  # a programming error: every raise site names a documented slug
            raise P2PFLError(f"unknown secagg reason {reason!r}")
        self.reason = reason
        super().__init__(f"{reason}: {message}")
