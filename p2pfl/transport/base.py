"""The transport seam: the one small interface every transport satisfies.

The peer only speaks to this interface, so the same peer code runs over real libp2p (package ``libp2p``) and
over the in-process ``memory.py`` transport used for very large simulations and for users' own tests.

Two primitives are enough for the protocol:

* **broadcast**: small signed announcements to every subscriber of the network's topic (gossipsub on libp2p).
  Oversize announcements are refused loudly, never dropped silently.
* **request**: one request/response exchange over a direct stream with a named protocol (payload fetch by
  digest, snapshot fetch). Both sides bound sizes and time.

Transports never interpret the bytes they carry: validation is the protocol layer's job. A transport may
still drop a message whose envelope it cannot parse when it acts as a gossip validator, see
``Transport.set_gossip_validator``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

#: Handler for an incoming request on a stream protocol: (remote peer id, request bytes) -> response bytes.
RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
#: Handler for an incoming gossip message: (peer id of the forwarder that delivered it, message bytes).
GossipHandler = Callable[[str, bytes], Awaitable[None]]
#: Synchronous gossip validator: (forwarder peer id, message bytes) -> accept?  Must be cheap and never block.
GossipValidator = Callable[[str, bytes], bool]
#: Told of every outbound request when it ends: (protocol, seconds it took, succeeded?). Must not raise.
RequestObserver = Callable[[str, float, bool], None]
#: The key of gossip (application) messages in ``TransportStats.sent_by``/``received_by``; requests are
#: counted under their protocol id.
GOSSIP = "gossip"


@dataclass
class TransportStats:
    """Byte and message counters, for status lines and simulation reports."""

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    requests_served: int = 0
    requests_failed: int = 0
    #: duplicate or half-closed connection pairs torn down and redialled (libp2p only)
    connections_resynced: int = 0
    #: pubsub streams found on a closed connection while a live one was up, and reopened (libp2p only)
    pubsub_streams_healed: int = 0
    #: connections closed at the socket because a request on them outlived its deadline (libp2p only)
    connections_aborted: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    #: ``bytes_sent``/``bytes_received`` split by what carried them: ``GOSSIP`` or a request protocol id
    #: (a transport's own protocols only, so the keys stay few)
    sent_by: dict[str, int] = field(default_factory=dict)
    received_by: dict[str, int] = field(default_factory=dict)
    #: every byte on the connections, framing, encryption and protocol control included (libp2p only;
    #: 0 for the memory transport, which has no wire)
    wire_sent: int = 0
    wire_received: int = 0
    #: gossip RPC bytes queued for sending (libp2p only), by part: ``publish`` (messages, ours and relayed),
    #: ``control`` (GRAFT, PRUNE, IHAVE, IWANT, IDONTWANT), ``record`` (the rest: peer records, framing)
    gossip_sent_by: dict[str, int] = field(default_factory=dict)
    #: set by a metrics layer to time outbound requests; None: nobody listens
    request_observer: RequestObserver | None = None

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def add_sent(self, key: str, n: int) -> None:
        """``n`` application bytes sent over ``key`` (``GOSSIP`` or a protocol id)."""
        self.bytes_sent += n
        self.sent_by[key] = self.sent_by.get(key, 0) + n

    def add_received(self, key: str, n: int) -> None:
        """``n`` application bytes received over ``key`` (``GOSSIP`` or a protocol id)."""
        self.bytes_received += n
        self.received_by[key] = self.received_by.get(key, 0) + n

    def add_gossip_rpc(self, part: str, n: int) -> None:
        """``n`` bytes of gossip RPC ``part`` queued for sending (see ``gossip_sent_by``)."""
        if n:
            self.gossip_sent_by[part] = self.gossip_sent_by.get(part, 0) + n

    def observe_request(self, protocol: str, started: float, ok: bool) -> None:
        """Tell the observer (if any) that a request begun at ``started`` (``time.perf_counter()``) ended;
        an observer's failure never reaches the request."""
        observer = self.request_observer
        if observer is not None:
            try:
                observer(protocol, time.perf_counter() - started, ok)
            except Exception:  # the observer is diagnostics: it must not fail a request
                self.drop("request_observer_error")


class Transport(Protocol):
    """What the peer needs from a network. All methods run on the caller's trio loop."""

    @property
    def peer_id(self) -> str:
        """This node's peer id string (``12D3KooW...`` on libp2p)."""
        ...

    @property
    def listen_addrs(self) -> list[str]:
        """Addresses others can dial, as multiaddr strings including ``/p2p/<peer id>``."""
        ...

    @property
    def stats(self) -> TransportStats: ...

    def set_gossip_handler(self, handler: GossipHandler) -> None: ...

    def set_gossip_validator(self, validator: GossipValidator) -> None: ...

    def set_request_handler(self, protocol: str, handler: RequestHandler) -> None: ...

    async def broadcast(self, data: bytes) -> None:
        """Publish ``data`` on the network topic. Raises ``TransportError`` if it exceeds the gossip cap."""
        ...

    async def request(
        self, peer_id: str, protocol: str, data: bytes, *, max_response: int, timeout: float
    ) -> bytes:
        """Send one request to ``peer_id`` over ``protocol`` and return its response (bounded, timed)."""
        ...

    async def connect(self, addr: str) -> str:
        """Dial a multiaddr (with ``/p2p/<id>``); return the remote peer id."""
        ...

    async def disconnect(self, peer_id: str) -> None:
        """Close connections to ``peer_id`` (used on eviction)."""
        ...

    def connected_peers(self) -> list[str]: ...

    def is_connected(self, peer_id: str) -> bool:
        """Whether ``peer_id`` is in :meth:`connected_peers`, without building the list: the mix filter asks
        it for every neighbour on every pass of a round's wait, and on libp2p the list costs a peer id
        encoding per connection (a hub with hundreds of links paid that squared)."""
        ...

    def listeners(self) -> list[str]:
        """Connected peers subscribed to our announcements (learners; not e.g. a bootstrap registry)."""
        ...


def filter_allows(check: Callable[[str], bool] | None, peer_id: str) -> bool:
    """A peer or link filter's verdict on ``peer_id``: no filter admits; one that raises refuses."""
    if check is None:
        return True
    try:
        return bool(check(peer_id))
    except Exception:
        return False
