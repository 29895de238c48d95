"""Tunables of the libp2p transport, validated in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from p2pfl.errors import ConfigError, TransportError
from p2pfl.transport.inbound import InboundLimits
from p2pfl.transport.libp2p.compat import MAX_RPC_BYTES

__all__ = ["RPC_OVERHEAD", "Libp2pConfig"]

#: Room left in a gossipsub RPC for the envelope around the data (signature, key, topic, seqno, record).
RPC_OVERHEAD: Final = 4096


@dataclass(frozen=True)
class Libp2pConfig:
    """Tunables of :class:`Libp2pTransport`. Defaults suit 2-100 peers; every limit is enforced, loudly."""

    #: Largest ``broadcast`` payload; larger ones raise (payloads go over ``request`` instead).
    gossip_max_bytes: int = 256 * 1024
    #: Gossipsub heartbeat in whole seconds (the library types it as int).
    heartbeat_interval: int = 1
    #: Mesh degrees per topic. With ``gossip_relay`` off the mesh carries no messages (the owner of a topic
    #: sends to every subscriber itself): it only decides where IHAVE goes, so it is kept small.
    mesh_degree: int = 2
    mesh_degree_low: int = 1
    mesh_degree_high: int = 4
    #: Relay other peers' announcements through the mesh (gossipsub's default behaviour). Off: each
    #: publisher reaches the subscribers of its topic, which are exactly its connected neighbours, directly;
    #: no copies, no IDONTWANT (see :class:`.compat.LeanGossipSub`).
    gossip_relay: bool = False
    #: IHAVE targets per topic and heartbeat (lazy gossip); None: py-libp2p's own (at least 6). A missed
    #: announcement is repaired by a snapshot fetch, so 0 (off) is the default.
    gossip_lazy_peers: int | None = 0
    #: py-libp2p's opportunistic grafting and score-based mesh replacement. With all scores 0 it grafts two
    #: peers per topic per heartbeat until the mesh overflows and is pruned, forever (GRAFT storms): off.
    opportunistic_graft: bool = False
    #: Attach the host's signed peer record to every gossip RPC (py-libp2p's default, ~250 bytes each);
    #: off, it travels once per stream, in the subscriptions hello.
    gossip_peer_records: bool = False
    #: Gossipsub spam protection: messages per second per forwarder per topic before forwarding stops.
    spam_limit_per_second: float = 100.0
    #: Our own publish rate ceiling (must stay below ``spam_limit_per_second``: own publishes count too).
    publish_rate_per_second: float = 50.0
    #: How long ``broadcast`` waits for a congested peer's outbound queue (32 RPCs) before publishing anyway.
    publish_backpressure_timeout: float = 1.0
    #: Largest request body accepted by our request handlers.
    max_request_bytes: int = 64 * 1024
    #: Time a remote has to deliver a whole request frame once the stream is negotiated (slow-loris bound;
    #: the per-peer stream cap bounds what a slow peer holds). 10 s failed 80 of ~1,000 snapshot requests
    #: with 32 peer processes on 2 cores: the requester only writes after the negotiation's round trip.
    request_read_timeout: float = 30.0
    #: Time our own request handler may take before the requester gets an error frame.
    handler_timeout: float = 60.0
    #: Writing a response must progress at least this fast (plus ``io_grace``), else the stream is reset.
    min_write_rate: float = 1 << 20
    io_grace: float = 10.0
    write_chunk: int = 1 << 20
    #: Batched Noise and yamux (:mod:`.compat_noise`, :mod:`.compat_yamux`): the same wire protocol as
    #: py-libp2p's, fewer syscalls, copies and window waits per frame. Off: py-libp2p's own classes, except
    #: that a frame write is never cut off by its caller's cancellation (:mod:`.compat_frames`, both ways).
    fast_streams: bool = True
    max_inbound_streams_per_peer: int = 8
    max_inbound_streams: int = 64
    #: Accepted gossip waiting for the gossip handler; beyond it messages are dropped and counted.
    gossip_backlog: int = 1024
    max_connections: int = 300
    #: Inbound connections one source (an IPv4 address, an IPv6 /64) may start per second, up to
    #: ``inbound_burst`` at once, and handshakes it may have in flight (:mod:`p2pfl.transport.inbound`):
    #: every accepted connection costs us a Noise handshake, and a silent one an inbound slot until the
    #: handshake times out. Loopback is exempt unless ``inbound_limit_loopback`` (a simulation's peers all
    #: dial from 127.0.0.1). Refusals count as ``stats.dropped["inbound_rate" | "inbound_handshakes"]``.
    inbound_rate: float = 4.0
    inbound_burst: float = 64.0
    inbound_handshakes: int = 8
    inbound_limit_loopback: bool = False
    #: Protocol negotiation of a new stream (libp2p's default is 10 s). On a loaded host (32 peer processes on
    #: 2 cores) the median time from opening a request stream to the remote handler was measured at 3.5 s,
    #: the 95th percentile at 10 s: 10 s failed every twentieth snapshot fetch. ``request`` still bounds the
    #: whole exchange with its own ``timeout``.
    stream_negotiation_timeout: float = 30.0
    dial_timeout: float = 10.0
    #: Period of housekeeping (equivocation cache, forwarder map).
    maintenance_interval: float = 5.0
    #: Gossipsub queues every message for each connected peer not (yet) subscribed to its topic, in case the
    #: subscription is in flight, and keeps it this long (py-libp2p's default: 30 s, at most 100 per peer).
    #: With one topic per publisher most connected peers never subscribe to most topics (a bootstrap registry
    #: to none): the queue then held 30 s of traffic per such peer and logged a warning for every message past
    #: 100. A missed message costs us nothing (a gap makes the receiver fetch a snapshot), so keep it short.
    pending_gossip_ttl: float = 1.0
    #: How often subscriptions are reconciled with the connected peers (a connection change also triggers it).
    topic_sync_interval: float = 1.0
    #: A disconnected peer's topic stays subscribed this long, so a reconnect finds the mesh intact (gossipsub
    #: refuses a re-graft during its prune backoff).
    topic_linger_s: float = 300.0
    #: Score weight per invalid message (positive: py-libp2p subtracts it) and its per-heartbeat decay.
    invalid_message_weight: float = 10.0
    invalid_message_decay: float = 0.9
    behaviour_penalty_weight: float = 1.0
    behaviour_penalty_decay: float = 0.9
    gossip_threshold: float = -20.0
    publish_threshold: float = -40.0
    graylist_threshold: float = -80.0
    #: Behaviour penalty added by :meth:`Libp2pTransport.penalise` when no amount is given.
    penalty: float = 50.0
    #: Cleanup (stream reset/close, host close) is shielded from cancellation but never unbounded: a close
    #: that waits on a stalled connection must not hang the caller (a restarted peer's join once hung past
    #: 60 s). Closing the host gets four times this.
    cleanup_s: float = 5.0
    #: How long a request may outlive its own timeout and its bounded cleanup (``cleanup_s``) before its
    #: connection is taken for deadlocked and closed (:meth:`Libp2pTransport.abort`).
    stuck_grace_s: float = 5.0

    def inbound_limits(self) -> InboundLimits:
        """The admission limits of inbound connections these fields describe."""
        return InboundLimits(
            rate=self.inbound_rate,
            burst=self.inbound_burst,
            handshakes=self.inbound_handshakes,
            loopback=self.inbound_limit_loopback,
        )

    def validate(self) -> None:
        """Raise ``TransportError`` naming the first inconsistent field."""
        cap = MAX_RPC_BYTES - RPC_OVERHEAD
        if not 0 < self.gossip_max_bytes <= cap:
            raise TransportError(f"gossip_max_bytes must be in 1..{cap} (gossipsub caps RPCs at 1 MiB)")
        if self.heartbeat_interval < 1:
            raise TransportError("heartbeat_interval must be >= 1 s")
        if not 0 < self.publish_rate_per_second <= self.spam_limit_per_second:
            raise TransportError("publish_rate_per_second must be in (0, spam_limit_per_second]")
        if not 0 < self.mesh_degree_low <= self.mesh_degree <= self.mesh_degree_high:
            raise TransportError("need 0 < mesh_degree_low <= mesh_degree <= mesh_degree_high")
        if self.gossip_lazy_peers is not None and self.gossip_lazy_peers < 0:
            raise TransportError("gossip_lazy_peers must be >= 0 or None")
        try:
            self.inbound_limits()  # (InboundLimits checks its own ranges)
        except ConfigError as exc:
            raise TransportError(str(exc)) from exc
        for name in (
            "max_connections",
            "max_request_bytes",
            "max_inbound_streams_per_peer",
            "max_inbound_streams",
            "write_chunk",
        ):
            if getattr(self, name) < 1:
                raise TransportError(f"{name} must be >= 1")
        if self.stream_negotiation_timeout < 1:
            raise TransportError("stream_negotiation_timeout must be >= 1 s (libp2p takes whole seconds)")
        if not self.graylist_threshold <= self.publish_threshold <= self.gossip_threshold <= 0:
            raise TransportError("need graylist_threshold <= publish_threshold <= gossip_threshold <= 0")
        if not (self.cleanup_s > 0 and self.stuck_grace_s > 0):
            raise TransportError("cleanup_s and stuck_grace_s must be > 0")
