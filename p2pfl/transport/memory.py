"""In-process transport for very large simulations and for users' own tests (no sockets, no libp2p).

A :class:`MemoryNetwork` is a registry of :class:`MemoryTransport` objects sharing one trio loop. Connections
are explicit and symmetric: ``await t.connect("memory/<peer id>")``. Semantics follow the libp2p transport
closely enough that the same peer code runs on both:

* **broadcast reaches the sender's connected peers**, like the libp2p transport's per-publisher topics that
  exactly those peers subscribe to. With ``MemoryNetwork(flood=True)`` (the default) receivers also relay, as
  gossipsub's mesh does: each receiver runs its validator with the forwarder's id, and only if it accepts,
  delivers the message to its gossip handler once and forwards it to those of its own neighbours that are
  also connected to the origin (the origin's topic's other subscribers), except the forwarder. Duplicates are
  recognised by (origin, sequence number), like gossipsub's default message id; a transport opened again
  under a peer id numbers on from where the last one stopped (counting from 1 again, a restarted peer's
  messages were dropped as duplicates by every neighbour that had seen its earlier ones: a churned simulated
  peer's versions stopped reaching its neighbours). A rejected message is neither delivered nor forwarded.
  With ``flood=False`` there is no relaying (cheapest).
* **request** calls the remote handler directly (same task), bounded by ``timeout``, the remote's request
  size cap, its per-peer concurrency cap and the caller's ``max_response``; a remote exception becomes a
  ``TransportError`` carrying its message. Both peers must be connected (libp2p would need a dial).
* Each transport owns one inbox task; a full inbox drops and counts, like gossipsub's bounded queues.

1000 transports cost ~1000 trio tasks and a few small dicts each.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from p2pfl.errors import (
    IdentityError,
    P2PFLError,
    RequestTimeoutError,
    ResponseTooLargeError,
    TransportError,
)
from p2pfl.transport.base import (
    GOSSIP,
    GossipHandler,
    GossipValidator,
    RequestHandler,
    TransportStats,
    filter_allows,
)

__all__ = ["MemoryConfig", "MemoryNetwork", "MemoryTransport", "peer_id_from_seed"]

log = logging.getLogger(__name__)

_ADDR_PREFIX = "memory/"


def peer_id_from_seed(seed: bytes) -> str:
    """The libp2p peer id (``12D3KooW...``) of the Ed25519 key with this 32-byte seed, without libp2p."""
    from p2pfl.identity import Identity

    try:
        return Identity(seed).peer_id
    except IdentityError as exc:
        raise TransportError(f"seed must be exactly 32 bytes (an Ed25519 seed): {exc}") from None


@dataclass(frozen=True)
class MemoryConfig:
    """Limits of a :class:`MemoryTransport`, mirroring :class:`~p2pfl.transport.libp2p.Libp2pConfig`."""

    gossip_max_bytes: int = 256 * 1024
    max_request_bytes: int = 64 * 1024
    max_inbound_streams_per_peer: int = 8
    inbox_size: int = 4096
    #: Remembered message ids for de-duplication (oldest forgotten first).
    seen_cache: int = 65536


#: Access-control hook: peer id -> allowed?
PeerFilter = Callable[[str], bool]


class MemoryNetwork:
    """Registry of in-process transports; see the module docstring for delivery semantics."""

    def __init__(self, *, flood: bool = True) -> None:
        self.flood = flood
        self._transports: dict[str, MemoryTransport] = {}
        #: the last message sequence number each peer id's transport used (a reopened one numbers on)
        self._last_seq: dict[str, int] = {}

    def get(self, peer_id: str) -> MemoryTransport | None:
        """The running transport with this peer id, if any."""
        return self._transports.get(peer_id)

    def __len__(self) -> int:
        return len(self._transports)

    @asynccontextmanager
    async def open(
        self,
        *,
        network_id: str,
        peer_id: str | None = None,
        seed: bytes | None = None,
        config: MemoryConfig | None = None,
    ) -> AsyncIterator[MemoryTransport]:
        """Run a transport identified by ``peer_id`` (or the peer id of ``seed``) until the block exits."""
        if peer_id is None:
            if seed is None:
                raise TransportError("give peer_id or seed")
            peer_id = peer_id_from_seed(seed)
        if peer_id in self._transports:
            raise TransportError(f"peer id {peer_id} is already running in this network")
        t = MemoryTransport(self, peer_id=peer_id, network_id=network_id, config=config)
        t._seq = self._last_seq.get(peer_id, 0)
        self._transports[peer_id] = t
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(t._inbox_loop)
                t._running = True
                try:
                    yield t
                finally:
                    t._running = False
                    nursery.cancel_scope.cancel()
        finally:
            t._running = False
            del self._transports[peer_id]
            self._last_seq[peer_id] = t._seq
            for other in list(t._neighbours):
                t._unlink(other)


class MemoryTransport:
    """:class:`~p2pfl.transport.base.Transport` in one process; create it with :meth:`MemoryNetwork.open`."""

    def __init__(
        self, network: MemoryNetwork, *, peer_id: str, network_id: str, config: MemoryConfig | None
    ) -> None:
        self._net = network
        self._peer_id = peer_id
        self._network_id = network_id
        self._config = config or MemoryConfig()
        self._stats = TransportStats()
        #: connected peers in the order they connected (a dict: iteration, hence delivery order, does not
        #: change with the hash seed; p2pfl.sim.determinism)
        self._neighbours: dict[str, None] = {}
        self._gossip_handler: GossipHandler | None = None
        self._validator: GossipValidator | None = None
        self._handlers: dict[str, RequestHandler] = {}
        self._peer_filter: PeerFilter | None = None
        self._link_filter: PeerFilter | None = None
        self._blocked: set[str] = set()
        #: peers whose announcements we do not take (see :meth:`set_muted`)
        self._muted: frozenset[str] = frozenset()
        self._scores: dict[str, float] = {}
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._seq = 0
        self._inbound: dict[str, int] = {}
        self._running = False
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[tuple[str, str, int, bytes]](
            self._config.inbox_size
        )

    # ------------------------------------------------------------------------------------------ identity
    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def listen_addrs(self) -> list[str]:
        return [_ADDR_PREFIX + self._peer_id]

    @property
    def stats(self) -> TransportStats:
        return self._stats

    @property
    def network_id(self) -> str:
        return self._network_id

    # ------------------------------------------------------------------------------------------ handlers
    def set_gossip_handler(self, handler: GossipHandler) -> None:
        self._gossip_handler = handler

    def set_gossip_validator(self, validator: GossipValidator) -> None:
        self._validator = validator

    def set_request_handler(self, protocol: str, handler: RequestHandler) -> None:
        if not protocol.startswith("/"):
            raise TransportError(f"protocol id must start with '/': {protocol!r}")
        self._handlers[protocol] = handler

    def set_peer_filter(self, peer_filter: PeerFilter | None) -> None:
        """Refuse connections, requests and gossip from peers the filter rejects (counted as drops)."""
        self._peer_filter = peer_filter
        for pid in list(self._neighbours):
            if not self._peer_allowed(pid):
                self._stats.drop("peer_filter")
                self._unlink(pid)

    def set_link_filter(self, link_filter: PeerFilter | None) -> None:
        """Refuse new links with peers the filter rejects, either way (counted as ``link_filter`` drops);
        unlike the peer filter, their requests on other links and their gossip relayed by others pass."""
        self._link_filter = link_filter

    # ---------------------------------------------------------------------------------------- operations
    async def broadcast(self, data: bytes) -> None:
        if len(data) > self._config.gossip_max_bytes:
            raise TransportError(
                f"broadcast of {len(data)} bytes exceeds the gossip cap of {self._config.gossip_max_bytes} "
                "bytes; send large payloads over a request protocol"
            )
        self._require_running()
        self._seq += 1
        self._remember((self._peer_id, self._seq))
        self._stats.messages_sent += 1
        self._stats.add_sent(GOSSIP, len(data))
        self._forward(self._peer_id, self._peer_id, self._seq, bytes(data))
        await trio.lowlevel.checkpoint()

    async def request(
        self, peer_id: str, protocol: str, data: bytes, *, max_response: int, timeout: float
    ) -> bytes:
        started = time.perf_counter()
        try:
            body = await self._request(peer_id, protocol, data, max_response=max_response, timeout=timeout)
        except TransportError:
            self._stats.requests_failed += 1
            self._stats.observe_request(protocol, started, False)
            raise
        self._stats.observe_request(protocol, started, True)
        return body

    async def _request(
        self, peer_id: str, protocol: str, data: bytes, *, max_response: int, timeout: float
    ) -> bytes:
        self._require_running()
        what = f"request to {peer_id} over {protocol}"
        if len(data) > self._config.max_request_bytes:
            raise TransportError(f"request of {len(data)} bytes exceeds max_request_bytes")
        if not self._peer_allowed(peer_id):
            raise TransportError(f"peer {peer_id} is refused by the peer filter or blocked")
        remote = self._net.get(peer_id)
        if remote is None or peer_id not in self._neighbours:
            raise TransportError(f"peer {peer_id} is unknown or not connected")
        handler = remote._handlers.get(protocol)
        if handler is None:
            raise TransportError(f"{what}: cannot open stream (protocol unsupported)")
        rcfg = remote._config
        if not remote._peer_allowed(self._peer_id):
            remote._stats.drop("peer_filter")
            raise TransportError(f"{what}: refused by the remote peer")
        if len(data) > rcfg.max_request_bytes:
            remote._stats.drop("request_too_large")
            remote._stats.requests_failed += 1
            raise TransportError(f"{what} failed: stream reset by remote (request too large)")
        if remote._inbound.get(self._peer_id, 0) >= rcfg.max_inbound_streams_per_peer:
            remote._stats.drop("inbound_stream_limit")
            raise TransportError(f"{what} failed: stream reset by remote (too many concurrent streams)")
        self._stats.add_sent(protocol, len(data))
        remote._stats.add_received(protocol, len(data))
        remote._inbound[self._peer_id] = remote._inbound.get(self._peer_id, 0) + 1
        try:
            with trio.fail_after(timeout):
                response = await handler(self._peer_id, data)
        except trio.TooSlowError as exc:
            remote._stats.requests_failed += 1
            raise RequestTimeoutError(f"{what} timed out after {timeout} s") from exc
        except Exception as exc:
            remote._stats.requests_failed += 1
            if not isinstance(exc, P2PFLError):  # a bug of the remote's: one line, this request fails only
                log.error(
                    "request handler for %s failed peer=%s error=%s: %s",
                    protocol,
                    self._peer_id,
                    type(exc).__name__,
                    exc,
                )
            raise TransportError(f"{what}: remote handler failed: {type(exc).__name__}: {exc}") from exc
        finally:
            left = remote._inbound[self._peer_id] - 1
            if left:
                remote._inbound[self._peer_id] = left
            else:
                del remote._inbound[self._peer_id]
        response = bytes(response)
        remote._stats.requests_served += 1
        remote._stats.add_sent(protocol, len(response))
        if len(response) > max_response:
            raise ResponseTooLargeError(
                f"{what}: response of {len(response)} bytes exceeds max_response={max_response}"
            )
        self._stats.add_received(protocol, len(response))
        return response

    async def connect(self, addr: str) -> str:
        self._require_running()
        if not addr.startswith(_ADDR_PREFIX):
            raise TransportError(f"invalid memory address {addr!r} (need 'memory/<peer id>')")
        pid = addr[len(_ADDR_PREFIX) :]
        if pid == self._peer_id:
            raise TransportError("refusing to connect to ourselves")
        if not self._peer_allowed(pid):
            raise TransportError(f"peer {pid} is refused by the peer filter or blocked")
        remote = self._net.get(pid)
        if remote is None or not remote._running:
            raise TransportError(f"dial {addr} failed: no such peer in this memory network")
        if not remote._peer_allowed(self._peer_id):
            remote._stats.drop("peer_filter")
            raise TransportError(f"dial {addr} failed: refused by the remote peer")
        if pid not in self._neighbours:  # a new link: both ends' link filters
            if not filter_allows(self._link_filter, pid):
                raise TransportError(f"peer {pid} is refused by the link filter (resting)")
            if not filter_allows(remote._link_filter, self._peer_id):
                remote._stats.drop("link_filter")
                raise TransportError(f"dial {addr} failed: the remote peer refuses the link (resting)")
        self._neighbours[pid] = None
        remote._neighbours[self._peer_id] = None
        await trio.lowlevel.checkpoint()
        return pid

    async def disconnect(self, peer_id: str) -> None:
        self._unlink(peer_id)
        await trio.lowlevel.checkpoint()

    def connected_peers(self) -> list[str]:
        return list(self._neighbours)

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in self._neighbours

    def listeners(self) -> list[str]:
        """Connected peers that receive our announcements: every neighbour of our network (links carry gossip
        at once; gossip never crosses networks, as a libp2p peer of another network never subscribes to our
        topic) that did not mute us (:meth:`set_muted`)."""
        # the registry's dict, not ``MemoryNetwork.get``: a round's wait asks this on every pass
        running, own = self._net._transports, self._network_id
        return [
            p
            for p in self._neighbours
            if (r := running.get(p)) is None or (r._network_id == own and self._peer_id not in r._muted)
        ]

    def set_muted(self, peers: frozenset[str]) -> None:
        """Do not take the announcements of ``peers`` (libp2p: do not subscribe to their topics): neither
        they nor a relay send them to us. A secure-aggregation member mutes its fellows, whose announcements
        carry the group mean it already holds (docs/secagg.md)."""
        self._muted = frozenset(peers)

    def penalise(self, peer_id: str, amount: float | None = None) -> None:
        """Record a score penalty (kept for parity with libp2p; see :meth:`peer_score`)."""
        self._scores[peer_id] = self._scores.get(peer_id, 0.0) - (50.0 if amount is None else amount)

    def peer_score(self, peer_id: str) -> float:
        return self._scores.get(peer_id, 0.0)

    async def block(self, peer_id: str) -> None:
        """Disconnect ``peer_id`` and refuse it until :meth:`unblock`."""
        self._blocked.add(peer_id)
        self.penalise(peer_id)
        await self.disconnect(peer_id)

    def unblock(self, peer_id: str) -> None:
        self._blocked.discard(peer_id)

    def forget(self, peer_id: str) -> None:
        """Drop all that is kept of ``peer_id`` (its block and penalty): the engine forgot it."""
        self.unblock(peer_id)
        self._scores.pop(peer_id, None)

    # ---------------------------------------------------------------------------------------- internals
    def _require_running(self) -> None:
        if not self._running:
            raise TransportError("transport is not running (use `async with network.open(...)`)")

    def _peer_allowed(self, peer_id: str) -> bool:
        return peer_id not in self._blocked and filter_allows(self._peer_filter, peer_id)

    def _unlink(self, peer_id: str) -> None:
        self._neighbours.pop(peer_id, None)
        remote = self._net.get(peer_id)
        if remote is not None:
            remote._neighbours.pop(self._peer_id, None)

    def _remember(self, key: tuple[str, int]) -> bool:
        """Mark a message id seen; False if it already was."""
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self._config.seen_cache:
            self._seen.popitem(last=False)
        return True

    def _forward(self, origin: str, forwarder: str, seq: int, data: bytes) -> None:
        """Queue the message at every neighbour of the same network subscribed to the origin's topic
        (connected to the origin), except the forwarder and the origin."""
        for pid in self._neighbours:
            if pid in (forwarder, origin):
                continue
            remote = self._net.get(pid)
            if remote is None or remote._network_id != self._network_id:
                continue
            if origin != self._peer_id and origin not in remote._neighbours:
                continue
            if origin in remote._muted:
                continue
            try:
                remote._inbox_send.send_nowait((self._peer_id, origin, seq, data))
            except trio.WouldBlock:
                remote._stats.drop("gossip_backlog_full")

    async def _inbox_loop(self) -> None:
        async for forwarder, origin, seq, data in self._inbox_recv:
            if forwarder not in self._neighbours or origin == self._peer_id:
                continue  # disconnected meanwhile, or our own message coming back
            if (origin, seq) in self._seen:
                continue
            if not self._peer_allowed(forwarder) or not self._peer_allowed(origin):
                self._stats.drop("peer_filter")
                continue
            try:
                ok = self._validator is None or bool(self._validator(forwarder, data))
            except Exception:
                self._stats.drop("gossip_validator_error")
                ok = False
            if not ok:
                self._stats.drop("gossip_invalid")
                self.penalise(forwarder, 10.0)
                continue
            self._remember((origin, seq))
            self._stats.messages_received += 1
            self._stats.add_received(GOSSIP, len(data))
            if self._net.flood:
                self._forward(origin, forwarder, seq, data)
            handler = self._gossip_handler
            if handler is None:
                self._stats.drop("gossip_no_handler")
                continue
            try:
                await handler(forwarder, data)
            except Exception as exc:  # the handler should never raise (Peer's does not): one line, go on
                log.error("gossip handler failed peer=%s error=%s: %s", forwarder, type(exc).__name__, exc)
                log.debug("traceback of the failed gossip handler", exc_info=exc)
                self._stats.drop("gossip_handler_error")
