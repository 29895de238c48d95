"""Per-sender and per-relay rate limits, applied to gossip before the Ed25519 verify (pure: time passed in).

A verify costs ~100x a header parse, and every announcement that passes may start a fetch or a snapshot
request, so a flood of validly signed (or validly framed, badly signed) announcements must be dropped before
either. Three token buckets, each keyed and bounded:

- *relay*: every gossip message a forwarder (the transport-authenticated peer that delivered it) hands us
  costs one token, before anything else. It bounds the verifies one connection can make us run, whatever
  senders its messages claim.
- *sender*: charged only for messages whose signature verified, so a forger who writes a victim's id into
  its headers cannot spend the victim's tokens, and only for versions newer than the receiver holds of the
  sender, so a replayer who sends copies of the victim's signed messages cannot either (old ones are
  refused before the verify: :mod:`p2pfl.protocol.freshness`); while a sender's bucket is empty, messages
  claiming it are dropped *before* the verify (its own flood makes further copies cheap to refuse).
- *proof*: equivocation proofs per forwarder (each costs two verifies).
- *publisher*: for transports that can ask before their own per-message work (libp2p's read loop), every
  message read whose transport-level origin is a given publisher costs one of its tokens: a burst packed
  in a few RPCs, whatever identities its envelopes claim, then costs a lookup per message.

A drop is counted (``rate_limited``: the sender's bucket; ``rate_limited_relay``: the forwarder's;
``rate_limited_publisher``; ``proof_rate_limited``) and never reaches a replica, a fetch or the pacing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from p2pfl.errors import ConfigError, P2PFLError
from p2pfl.tokenbucket import Buckets as Buckets  # noqa: PLC0414 (re-export)


class Refused(P2PFLError):
    """A message refused by the engine's policy before its signature is checked (``reason``: the counter)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RateConfig:
    """Token-bucket rates (messages per second) and bursts. An honest peer publishes one delta per round and
    rounds take at least a training step, so the sender limit is far above any honest rate."""

    sender_rate: float = 20.0
    sender_burst: float = 60.0
    relay_rate: float = 200.0
    relay_burst: float = 600.0
    proof_rate: float = 1.0
    proof_burst: float = 8.0
    #: at most this many keys per bucket set (least recently used forgotten: a forgotten key restarts full,
    #: which the relay bucket still bounds)
    max_keys: int = 4096

    def __post_init__(self) -> None:
        for name in ("sender_rate", "sender_burst", "relay_rate", "relay_burst", "proof_rate", "proof_burst"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ConfigError("rates", name, f"must be a positive number, got {value!r}")
        if isinstance(self.max_keys, bool) or not isinstance(self.max_keys, int) or self.max_keys < 1:
            raise ConfigError("rates", "max_keys", f"must be an integer >= 1, got {self.max_keys!r}")


class RateGate:
    """The three bucket sets of the module docstring."""

    def __init__(self, cfg: RateConfig | None = None) -> None:
        self.cfg = cfg = cfg or RateConfig()
        self.relay = Buckets(cfg.relay_rate, cfg.relay_burst, cfg.max_keys)
        self.sender = Buckets(cfg.sender_rate, cfg.sender_burst, cfg.max_keys)
        self.proof = Buckets(cfg.proof_rate, cfg.proof_burst, cfg.max_keys)
        #: per gossip publisher (the transport-level origin: a libp2p topic's owner), charged for every
        #: message a transport reads, before anything else; relay numbers (copies of one honest publisher's
        #: messages arrive from each relay)
        self.publisher = Buckets(cfg.relay_rate, cfg.relay_burst, cfg.max_keys)

    def relay_allowed(self, via: str | None, now: float) -> bool:
        """Spend one of ``via``'s tokens; checked before the message is even parsed."""
        return via is None or self.relay.take(via, now)

    def before_verify(self, sender: str, now: float) -> str | None:
        """The reason to drop a message claiming ``sender`` before its verify, or None."""
        return None if self.sender.peek(sender, now) else "rate_limited"

    def after_verify(self, sender: str, now: float) -> str | None:
        """Charge a verified message to its signer; the reason to drop it if the signer is over its rate."""
        return None if self.sender.take(sender, now) else "rate_limited"

    def publisher_allowed(self, publisher: str, now: float) -> bool:
        """Spend one of ``publisher``'s tokens (see :meth:`GossipEngine.admit_sender`)."""
        return self.publisher.take(publisher, now)

    def proof_allowed(self, via: str | None, now: float) -> bool:
        return via is None or self.proof.take(via, now)
