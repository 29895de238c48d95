"""Connection policy: who may connect (filter, block list), dialling, duplicate-pair resync and the watchdog
that closes connections py-libp2p deadlocked."""

from __future__ import annotations

import logging
import math
import weakref
from contextlib import suppress
from typing import TYPE_CHECKING

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.score import PeerScorer

from p2pfl.errors import TransportError
from p2pfl.transport.base import TransportStats, filter_allows
from p2pfl.transport.libp2p import compat
from p2pfl.transport.libp2p.config import Libp2pConfig
from p2pfl.transport.libp2p.streams import cleanup_scope

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("p2pfl.transport.libp2p")


class _FilterNotifee(INotifee):
    """Close connections from peers the access filter (or the block list) refuses, right after Noise."""

    def __init__(self, transport: ConnectionsMixin) -> None:
        self._t = transport

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        pid = str(conn.muxed_conn.peer_id)
        if not self._t._peer_allowed(pid):
            self._t._stats.drop("peer_filter")
            self._t._refuse(pid)
            return
        if not filter_allows(self._t._link_filter, pid):  # a resting link (its close may still be under way)
            self._t._stats.drop("link_filter")
            self._t._refuse(pid)
            return
        self._t._topics_changed.set()
        self._t._on_connection_change(conn, closed=False)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._t._topics_changed.set()
        self._t._on_connection_change(conn, closed=True)

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


class ConnectionsMixin:
    """Connections of :class:`~p2pfl.transport.libp2p.Libp2pTransport`."""

    _config: Libp2pConfig
    _stats: TransportStats
    _host: IHost
    _id: ID
    _peer_id: str
    _gossipsub: GossipSub
    _pubsub: compat.HardenedPubsub
    _scorer: PeerScorer
    _topics_changed: trio.Event
    _peer_filter: Callable[[str], bool] | None
    _link_filter: Callable[[str], bool] | None
    _blocked: set[str]
    _inflight: dict[int, tuple[str, float]]
    #: when each live connection was registered (trio clock), to tell old connections from redials
    _conn_born: weakref.WeakKeyDictionary[INetConn, float]
    #: the connections to the same peer each live connection was seen open together with
    _conn_overlap: weakref.WeakKeyDictionary[INetConn, weakref.WeakSet[INetConn]]
    #: peers being resynced now; peer -> until when a redial by the other end is awaited (expired entries
    #: are pruned, so it holds only peers resynced within the last dial_timeout)
    _resyncing: set[str]
    _redial_expected: dict[str, float]
    _running: bool
    _nursery: trio.Nursery | None

    def set_peer_filter(self, peer_filter: Callable[[str], bool] | None) -> None:
        """Refuse peers for which ``peer_filter(peer_id)`` is False (or raises).

        Enforced when a connection is established (it is closed right after the Noise handshake, the first
        moment the peer id is known), when a stream is opened (pubsub and request protocols), and in the
        gossip validator for both the forwarder and the original sender. Each refusal is counted as
        ``stats.dropped["peer_filter"]``. Existing connections are re-checked now.
        """
        self._peer_filter = peer_filter
        for pid in self.connected_peers():
            if not self._peer_allowed(pid):
                self._stats.drop("peer_filter")
                self._refuse(pid)

    def set_link_filter(self, link_filter: Callable[[str], bool] | None) -> None:
        """Refuse new connections with peers for which ``link_filter(peer_id)`` is False (or raises), either
        way, counted as ``stats.dropped["link_filter"]``. Unlike the peer filter it leaves their streams on
        a connection already open and their gossip relayed by others alone: it is for links that ended under
        link rotation and rest (p2pfl.protocol.rotation), not for peers refused outright."""
        self._link_filter = link_filter

    # ---------------------------------------------------------------------------------------- operations
    async def connect(self, addr: str) -> str:
        self._require_running()
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise TransportError(f"invalid peer multiaddr {addr!r} (need .../p2p/<peer id>): {exc}") from exc
        pid = str(info.peer_id)
        if pid == self._peer_id:
            raise TransportError("refusing to connect to ourselves")
        if not self._peer_allowed(pid):
            raise TransportError(f"peer {pid} is refused by the peer filter or blocked")
        if not filter_allows(self._link_filter, pid):
            raise TransportError(f"peer {pid} is refused by the link filter (resting)")
        network = self._host.get_network()
        expected = self._redial_expected.pop(pid, -1.0) - trio.current_time()
        if expected > 0:
            # The other end of a resynced pair is dialling us: dialling it too would duplicate the link again.
            await self._await_connection(info.peer_id, expected)
        if not self._open_connections(info.peer_id):
            # An explicit connect dials exactly this address, now: the swarm otherwise refuses for 60 s a
            # peer whose last dial failed (negative cache) and tries only one stored TCP address per peer.
            self._host.get_peerstore().clear_addrs(info.peer_id)
            compat.evict_negative_dial_cache(network, pid)
        try:
            with trio.fail_after(self._config.dial_timeout):
                await self._host.connect(info)
        except trio.TooSlowError as exc:
            raise TransportError(f"dial {addr} timed out after {self._config.dial_timeout} s") from exc
        except Exception as exc:
            raise TransportError(f"dial {addr} failed: {type(exc).__name__}: {exc}") from exc
        return pid

    async def disconnect(self, peer_id: str) -> None:
        pid = self._parse_peer(peer_id)
        try:
            await self._host.disconnect(pid)
        except Exception as exc:
            log.debug("disconnect %s: %s", peer_id, exc)

    def connected_peers(self) -> list[str]:
        return [str(p) for p in self._host.get_connected_peers() if self._open_connections(p)]

    def is_connected(self, peer_id: str) -> bool:
        try:
            pid = ID.from_base58(peer_id)
        except Exception:  # not a peer id: nobody we are connected to
            return False
        return bool(self._open_connections(pid))

    def _open_connections(self, pid: ID) -> list[INetConn]:
        """``pid``'s connections that are not closing: the swarm lists a connection until its close is done
        (a yamux GO_AWAY, stream resets and 0.1 s sleeps), and a close cancelled midway never ends it."""
        return [c for c in self._host.get_network().get_connections(pid) if not c.is_closed]

    def abort(self, peer_id: str | None = None) -> int:
        """Close the TCP sockets of ``peer_id``'s connections (of every connection if None) at once.

        py-libp2p can deadlock a connection: when both ends' send buffers fill, each end's yamux reader waits
        for the write lock that a blocked ``send_all`` holds, so neither reads again, and a stream reset it
        runs in a shielded scope (``new_stream``'s cleanup) then waits forever, outliving any timeout
        (seen as a simulation worker that never exited). Closing the socket wakes the blocked send with an
        error; everything waiting behind it finishes. Returns how many connections were closed."""
        net = self._host.get_network()
        conns = net.get_connections(None if peer_id is None else self._parse_peer(peer_id))
        closed = 0
        for conn in conns:
            sock = compat.tcp_socket_of(conn)
            if sock is not None and sock.fileno() != -1:
                sock.close()  # trio's close wakes every task blocked on the socket
                closed += 1
        self._stats.connections_aborted += closed
        return closed

    def _overdue_after(self) -> float:
        """How long past its own timeout a request is taken for stuck: its bounded cleanup plus a grace."""
        return self._config.cleanup_s + self._config.stuck_grace_s

    def _abort_stuck(self) -> None:
        now = trio.current_time()
        for peer_id in sorted({p for p, overdue in self._inflight.values() if overdue <= now}):
            closed = self.abort(peer_id)
            log.log(
                logging.WARNING if closed else logging.DEBUG,
                "a request to %s outlived its timeout by %.1f s: closed %d deadlocked connection(s)",
                peer_id,
                self._overdue_after(),
                closed,
            )
            for token, (p, _) in list(self._inflight.items()):
                if p == peer_id:  # once per grace period, not per tick
                    self._inflight[token] = (p, now + self._config.stuck_grace_s)

    async def block(self, peer_id: str) -> None:
        """Evict ``peer_id``: disconnect it, refuse its connections, streams and messages until unblocked."""
        pid = self._parse_peer(peer_id)
        self._blocked.add(peer_id)
        self._scorer.penalize_behavior(pid, self._config.penalty)
        if self._running:
            self._pubsub.add_to_blacklist(pid)
        await self.disconnect(peer_id)

    def unblock(self, peer_id: str) -> None:
        pid = self._parse_peer(peer_id)
        self._blocked.discard(peer_id)
        self._pubsub.remove_from_blacklist(pid)

    def forget(self, peer_id: str) -> None:
        """Unblock ``peer_id`` and, unless it is connected, drop its gossipsub score state: the engine forgot
        it (p2pfl.protocol.churn). The router drops a peer's scores when it disconnects, but :meth:`block`
        penalises identities that were never connected too (a relayed sender), and those entries stayed."""
        self.unblock(peer_id)
        pid = self._parse_peer(peer_id)
        if not self._host.get_network().get_connections(pid):
            self._scorer.remove_peer(pid)

    # ------------------------------------------------------------------------------ duplicate connections
    def _on_connection_change(self, conn: INetConn, *, closed: bool) -> None:
        """Schedule a resync when a peer has two connections, or loses one of two (see the package notes)."""
        try:
            pid = conn.muxed_conn.peer_id
        except Exception:
            return
        now = trio.current_time()
        current = self._open_connections(pid)
        if not closed:
            # Every connection registered now is born by now, even if its own notification comes later: the
            # swarm may register both of a simultaneous pair before notifying the first, and a later birth
            # stamp left that connection out of the resync (each end then closed one and kept one).
            together = {conn, *current}
            for c in together:
                self._conn_born.setdefault(c, now)
                self._conn_overlap.setdefault(c, weakref.WeakSet()).update(together - {c})
        others = [c for c in current if c is not conn]
        if closed:
            # The swarm notifies a close after removing the connection, and under CPU load a redial that
            # replaced it can be registered before that notification runs: that pair never doubled.
            others = [c for c in others if self._overlapped(conn, c)]
        if not others or self._nursery is None or not self._running:
            return
        peer = str(pid)
        if peer in self._resyncing or not self._peer_allowed(peer):
            return
        self._resyncing.add(peer)
        self._nursery.start_soon(self._resync, pid, now)

    def _overlapped(self, conn: INetConn, other: INetConn) -> bool:
        """Whether the two were ever open together; a connection no notification recorded counts as one."""
        seen = self._conn_overlap.get(conn)
        return seen is None or other not in self._conn_overlap or other in seen

    async def _resync(self, pid: ID, trigger: float) -> None:
        """Close every connection to ``pid`` registered up to ``trigger``; redial if this end should.

        Connections made after the trigger are the other end's redial and are kept. The redialling end is
        the one holding an outbound connection (it knows a dialable address), the lower peer id if both do;
        the other end waits for it (:meth:`connect` holds off a while) so the pair does not duplicate again.
        """
        peer = str(pid)
        # (the caller marked it already; a direct call, as the tests make, must not let the other end's
        # redial start a second resync of the pair while this one awaits it)
        self._resyncing.add(peer)
        try:
            conns = [c for c in self._open_connections(pid) if self._conn_born.get(c, -math.inf) <= trigger]
            if not conns:
                return
            dirs = {compat.connection_direction(c) for c in conns}
            we_dialled = "outbound" in dirs
            they_dialled = "inbound" in dirs
            redial = we_dialled and (not they_dialled or self._peer_id < peer)
            addrs = self._known_addrs(pid) if redial else []
            self._stats.connections_resynced += 1
            log.info("resyncing %d connections to %s (redial: %s)", len(conns), peer, redial)
            if not redial:
                now = trio.current_time()
                self._redial_expected = {p: t for p, t in self._redial_expected.items() if t > now}
                self._redial_expected[peer] = now + self._config.dial_timeout
            for conn in conns:
                with cleanup_scope(self._config.cleanup_s), suppress(Exception):
                    await conn.close()
            # pubsub forgets the peer once its last connection is gone; a redial before that would be ignored
            with trio.move_on_after(self._config.cleanup_s):
                while compat.has_pubsub_stream(self._pubsub, pid) and not self._open_connections(pid):
                    await trio.sleep(0.02)
            if not redial:
                # The other end should redial; if it does not (it saw only one connection, so never resynced;
                # measured: both ends left with none, ~1 run in 10 of the simultaneous-dial test), we do.
                redial = not await self._await_connection(pid, self._config.dial_timeout)
                addrs = self._known_addrs(pid) if redial else []
                if redial:
                    log.info("no redial from %s after resync: dialling it", peer)
            if redial and addrs and self._peer_allowed(peer) and self._running:
                try:
                    with trio.fail_after(self._config.dial_timeout):
                        await self._host.connect(PeerInfo(pid, addrs))
                except Exception as exc:  # the peer layer's reconnect logic takes over
                    log.info("redial after resync to %s failed: %s: %s", peer, type(exc).__name__, exc)
        finally:
            self._resyncing.discard(peer)
            # A pair that formed again while we resynced (both ends redialled) was ignored then: go again.
            again = self._open_connections(pid)  # (closing ones counted, each close began a resync: a storm)
            if len(again) > 1 and self._running:
                self._on_connection_change(again[-1], closed=False)

    async def _heal_pubsub_streams(self) -> None:
        """Drop pubsub's stream to each peer whose stream is on a closed connection while a live one is up
        (:func:`compat.stale_stream_peers`): pubsub then opens one on the live connection, and the peer sends
        its subscriptions again (``HardenedPubsub.announce_to``). Without this such a link stayed connected
        with gossip stopped for good (measured after crossing dials, docs/benchmarks.md)."""
        for pid in compat.stale_stream_peers(self._pubsub, self._host.get_network()):
            self._stats.pubsub_streams_healed += 1
            log.info("pubsub stream to %s was on a closed connection: reopening it", pid)
            await compat.drop_stale_stream(self._pubsub, pid)

    # ---------------------------------------------------------------------------------------- internals
    async def _await_connection(self, pid: ID, seconds: float) -> bool:
        """Wait up to ``seconds`` for a connection to ``pid`` (the other end dials); whether there is one."""
        with trio.move_on_after(seconds):
            while not self._open_connections(pid):
                await trio.sleep(0.05)
        return bool(self._open_connections(pid))

    def _require_running(self) -> None:
        if not self._running:
            raise TransportError("transport is not running (use `async with Libp2pTransport.open(...)`)")

    @staticmethod
    def _parse_peer(peer_id: str) -> ID:
        try:
            return ID.from_base58(peer_id)
        except Exception as exc:
            raise TransportError(f"invalid peer id {peer_id!r}") from exc

    def _known_addrs(self, pid: ID) -> list[multiaddr.Multiaddr]:
        try:
            return list(self._host.get_peerstore().addrs(pid))
        except Exception:  # PeerStoreError for a peer never seen
            return []

    def _peer_allowed(self, peer_id: str) -> bool:
        return peer_id not in self._blocked and filter_allows(self._peer_filter, peer_id)

    def _refuse(self, peer_id: str) -> None:
        """Disconnect a refused peer from a background task (never inline in a swarm callback)."""
        if self._nursery is not None:
            self._nursery.start_soon(self.disconnect, peer_id)

    async def _maintenance_loop(self) -> None:
        while True:
            await trio.sleep(min(self._config.maintenance_interval, self._config.stuck_grace_s))
            self._abort_stuck()
            compat.clear_equivocation_cache(self._gossipsub)
