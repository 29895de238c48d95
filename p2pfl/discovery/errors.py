"""Discovery errors: every refusal of a record, a message or a registry, each with a stable ``reason``."""

from __future__ import annotations

from typing import ClassVar

from p2pfl.errors import P2PFLError

__all__ = [
    "DiscoveryError",
    "MalformedRecordError",
    "NetworkMismatchError",
    "NonCanonicalRecordError",
    "OversizeRecordError",
    "PeerMismatchError",
    "RecordError",
    "RecordSchemaError",
    "RecordSignatureError",
    "RegistryError",
    "RegistryUnavailableError",
]


class DiscoveryError(P2PFLError):
    """Root of discovery failures. ``reason`` is a stable slug, used to count rejections."""

    reason: ClassVar[str] = "discovery"


class RecordError(DiscoveryError):
    """A peer record (or a protocol message) is malformed, oversize, non-canonical or wrongly signed."""

    reason = "bad_record"


class MalformedRecordError(RecordError):
    reason = "malformed"


class OversizeRecordError(RecordError):
    reason = "oversize"


class RecordSchemaError(RecordError):
    reason = "schema"


class NonCanonicalRecordError(RecordError):
    reason = "non_canonical"


class RecordSignatureError(RecordError):
    reason = "bad_signature"


class PeerMismatchError(RecordError):
    """Validly signed, but for another peer than the one expected (e.g. a peer registering someone else)."""

    reason = "peer_mismatch"


class NetworkMismatchError(RecordError):
    reason = "wrong_network"


class RegistryError(DiscoveryError):
    """A registry answered with an error response; ``reason`` is the registry's slug."""

    def __init__(self, reason: str, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"registry refused: {reason}: {detail}")
        self.reason = reason  # type: ignore[misc]  # instance slug from the remote
        self.detail = detail
        self.retry_after = retry_after


class RegistryUnavailableError(DiscoveryError):
    """No bootstrap registry answered (all dead, unreachable, or answering garbage)."""

    reason = "registry_unavailable"
