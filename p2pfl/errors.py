"""One error taxonomy for the whole library.

Every error raised on purpose by p2pfl derives from :class:`P2PFLError`, so a host application can catch
one type. Messages say what was wrong and, where it helps, what to do about it.
"""

from __future__ import annotations


class P2PFLError(Exception):
    """Root of every error p2pfl raises on purpose."""


class IdentityError(P2PFLError):
    """A key or key file is missing, malformed, unsafe, or would be overwritten."""


class ConfigError(P2PFLError):
    """A configuration value is missing or invalid; the message names the key.

    ``ConfigError(section, key, reason)`` reads ``[section] key: reason`` and keeps the three parts as
    attributes (``section`` is ``None`` for a setting that has no TOML form); ``ConfigError(message)`` is a
    message as it is (the parts are then ``None``)."""

    section: str | None
    key: str | None
    reason: str | None

    def __init__(self, *args: object) -> None:
        self.section = self.key = self.reason = None
        if len(args) == 3:
            section, key, reason = args
            if (
                (section is None or isinstance(section, str))
                and isinstance(key, str)
                and isinstance(reason, str)
            ):
                self.section, self.key, self.reason = section, key, reason
                super().__init__(f"[{section}] {key}: {reason}" if section else f"{key}: {reason}")
                return
        super().__init__(*args)


class AggregationError(P2PFLError):
    """An aggregator was given inputs it cannot work with (shape, too few rows for f, bad weights)."""


class TransportError(P2PFLError):
    """The network layer failed: dial, stream, timeout, or a peer that broke the protocol.

    ``reason`` is the slug a failed fetch is counted under (subclasses name the specific failures)."""

    reason = "unavailable"


class ResponseTooLargeError(TransportError):
    """A peer answered a request with more bytes than the caller allowed (``max_response``)."""

    reason = "oversize"


class RequestTimeoutError(TransportError):
    """A request got no complete response within its timeout (a stalled or overloaded peer)."""

    reason = "timeout"


class ProtocolViolationError(TransportError):
    """A response broke the stream protocol's framing: truncated or empty frame, unknown status byte."""

    reason = "bad_response"


class StateError(P2PFLError):
    """A checkpoint or version log on disk is missing, corrupt, or fails verification."""
