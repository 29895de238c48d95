"""Every touch of py-libp2p internals, in one place, for the one py-libp2p version we support.

py-libp2p is young and renames its internals between releases; the transport needs a few of them to fix what
the library gets wrong (see the package docstring). Each workaround is a named function or class here with
the reason it exists. At import this module checks that the installed version is one it was written for and
that every private name it patches or reads exists, so an upgrade fails at once with
:class:`UnsupportedLibp2pError` instead of silently at run time. No other module of p2pfl reaches into
py-libp2p's private attributes (a test enforces it).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from functools import partial
from typing import Any, Final, Literal

import trio
from libp2p.abc import INetConn, INetStream, INetwork
from libp2p.network.connection.swarm_connection import SwarmConn
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize, OutBoundQueueSize
from libp2p.pubsub.score import PeerScorer
from libp2p.rcmgr import Direction
from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.tools.anyio_service.trio_tasks import FunctionTask

from p2pfl.errors import TransportError
from p2pfl.transport.base import TransportStats

__all__ = [
    "MAX_RPC_BYTES",
    "OUTBOUND_QUEUE_SIZE",
    "REQUIRED_ATTRS",
    "REQUIRED_INSTANCE_ATTRS",
    "SUPPORTED",
    "HardenedPubsub",
    "LeanGossipSub",
    "UnsupportedLibp2pError",
    "check_instances",
    "clear_equivocation_cache",
    "connection_direction",
    "count_wire_bytes",
    "disable_auto_connector",
    "evict_negative_dial_cache",
    "has_pubsub_stream",
    "mesh_members",
    "outbound_queue_lengths",
    "peer_scorer",
    "quiet_libp2p_logging",
    "tcp_socket_of",
    "topic_subscribers",
]

log = logging.getLogger("p2pfl.transport.libp2p")

#: py-libp2p releases whose internals this module was checked against.
SUPPORTED: Final = frozenset({"0.8.1"})


class UnsupportedLibp2pError(TransportError):
    """The installed py-libp2p is not a version p2pfl supports (its internals may differ)."""

    reason = "unsupported_libp2p"


#: (class, attribute) pairs this module overrides or reads; checked with ``hasattr`` at import.
REQUIRED_ATTRS: Final[tuple[tuple[type, str], ...]] = (
    (Pubsub, "stream_handler"),
    (Pubsub, "push_msg"),
    (Pubsub, "notify_subscriptions"),
    (Pubsub, "_teardown_if_connected"),
    (Pubsub, "_handle_dead_peer"),
    (Pubsub, "_forget_all_subscriptions"),
    (Pubsub, "get_message_id"),
    (SwarmConn, "direction"),
    (GossipSub, "send_rpc"),
    (GossipSub, "_get_peers_to_send"),
    (GossipSub, "_perform_opportunistic_grafting"),
    (GossipSub, "_consider_peer_replacement"),
    (GossipSub, "_get_adaptive_gossip_peers_count"),
    (GossipSub, "_emit_idontwant_for_message"),
    (GossipSub, "publish"),
    (GossipSub, "_check_spam_protection"),
    (GossipSub, "_check_equivocation"),
    (GossipSub, "_notify_observers"),
    (PeerScorer, "penalize_behavior"),
    (PeerScorer, "score"),
    # compat_cpu
    (TrioManager, "_find_parent_task"),
    (TrioManager, "_run_and_manage_task"),
    (FunctionTask, "is_done"),
    (FunctionTask, "has_trio_task"),
    (FunctionTask, "trio_task"),
)

#: Attributes set in ``__init__`` (not visible on the class): checked on every host built, by
#: :func:`check_instances`, as (what, attribute).
REQUIRED_INSTANCE_ATTRS: Final[tuple[tuple[Literal["network", "pubsub", "gossipsub"], str], ...]] = (
    ("network", "auto_connector"),
    ("network", "_negative_peer_cache"),
    ("network", "upgrader"),
    ("pubsub", "peers"),
    ("pubsub", "peer_queues"),
    ("pubsub", "peer_topics"),
    ("gossipsub", "mesh"),
    ("gossipsub", "peer_protocol"),
    ("gossipsub", "scorer"),
    ("gossipsub", "equivocation_detection"),
    ("gossipsub", "mcache"),
    ("gossipsub", "topic_observation"),
)

#: Largest RPC gossipsub accepts (larger publishes are dropped silently).
MAX_RPC_BYTES: Final[int] = DefaultMaxMessageSize
#: RPCs queued per peer before pubsub drops new ones silently.
OUTBOUND_QUEUE_SIZE: Final[int] = OutBoundQueueSize


def _unsupported(found: str) -> UnsupportedLibp2pError:
    return UnsupportedLibp2pError(
        f"p2pfl supports py-libp2p {', '.join(sorted(SUPPORTED))}, found {found}; "
        f"pin libp2p=={max(SUPPORTED)} or upgrade p2pfl"
    )


def _check_version() -> None:
    try:
        version = importlib.metadata.version("libp2p")
    except importlib.metadata.PackageNotFoundError:
        version = "no installed distribution"
    if version not in SUPPORTED:
        raise _unsupported(version)
    missing = [f"{cls.__name__}.{name}" for cls, name in REQUIRED_ATTRS if not hasattr(cls, name)]
    if missing:
        raise _unsupported(f"{version} without {', '.join(missing)}")


_check_version()

from p2pfl.transport.libp2p import compat_cpu  # noqa: E402 - after the check: it patches what it checked

compat_cpu.install()


def check_instances(network: INetwork, pubsub: Pubsub, gossipsub: GossipSub) -> None:
    """Raise :class:`UnsupportedLibp2pError` unless the instance attributes we use exist on a built host."""
    objs: dict[str, object] = {"network": network, "pubsub": pubsub, "gossipsub": gossipsub}
    missing = [f"{what}.{name}" for what, name in REQUIRED_INSTANCE_ATTRS if not hasattr(objs[what], name)]
    if missing:
        raise _unsupported(f"{importlib.metadata.version('libp2p')} without {', '.join(missing)}")


# ------------------------------------------------------------------------------------------------ logging
def quiet_libp2p_logging() -> None:
    """Stop libp2p's WARNING spam reaching stderr without hiding it from an application's own handlers.

    Importing libp2p (without ``LIBP2P_DEBUG``) sets the ``libp2p`` logger to WARNING, ``propagate=False``
    and no handler, so its warnings go to Python's last-resort stderr handler and never to the app's
    handlers. We restore propagation and add a NullHandler; ``LIBP2P_DEBUG`` setups are left alone.
    """
    if os.environ.get("LIBP2P_DEBUG"):
        return
    root = logging.getLogger("libp2p")
    if not any(isinstance(h, logging.NullHandler) for h in root.handlers):
        root.addHandler(logging.NullHandler())
    root.propagate = True
    if root.level == logging.NOTSET or root.level < logging.WARNING:
        root.setLevel(logging.WARNING)
    # It sets INFO on itself; we disable it anyway.
    logging.getLogger("libp2p.network.auto_connector").setLevel(logging.WARNING)
    # Failed dials and stream opens are logged at ERROR *and* raised; we raise them as TransportError.
    for name, prefix in (
        ("libp2p.host.basic_host", "Failed to open stream"),
        ("libp2p.transport.tcp.tcp", "Failed to open TCP stream"),
    ):
        logging.getLogger(name).addFilter(partial(_not_prefixed, prefix))


def _not_prefixed(prefix: str, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(prefix)


quiet_libp2p_logging()


# ------------------------------------------------------------------------------------------------- pubsub
class HardenedPubsub(Pubsub):
    """Pubsub that survives hostile input and hands accepted messages (with their forwarder) to the transport.

    * a malformed RPC raises protobuf's ``DecodeError`` out of the library's ``stream_handler`` and stops
      the pubsub service (the host with it): here it drops that peer's stream, never the host;
    * ``push_msg`` failures (an undecodable key, a raising sync validator) drop the message, never the
      service;
    * ``notify_subscriptions`` delivers straight to the transport instead of a 32-slot channel that drops
      silently when full;
    * the private ``_teardown_if_connected`` is made idempotent (see its docstring).

    The transport calls :meth:`bind` right after construction, before the service runs.
    """

    #: peer id -> may it talk to us (the access filter and block list)
    allow: Callable[[str], bool]
    #: count a dropped message or stream under a reason
    drop: Callable[[str], None]
    #: may a received message be processed at all (before its task and signature check)
    admit: Callable[[rpc_pb2.Message], bool]
    #: called once per accepted, first-seen message (ours included)
    on_accepted: Callable[[rpc_pb2.Message], None]
    #: reset a stream, bounded and quietly
    reset_stream: Callable[[INetStream], Awaitable[None]]

    def bind(
        self,
        *,
        allow: Callable[[str], bool],
        drop: Callable[[str], None],
        on_accepted: Callable[[rpc_pb2.Message], None],
        reset_stream: Callable[[INetStream], Awaitable[None]],
        admit: Callable[[rpc_pb2.Message], bool] | None = None,
    ) -> None:
        """Connect the hooks to the transport."""
        self.allow, self.drop, self.on_accepted, self.reset_stream = allow, drop, on_accepted, reset_stream
        self.admit = admit or (lambda msg: True)

    async def stream_handler(self, stream: INetStream) -> None:
        peer_id = stream.muxed_conn.peer_id
        if not self.allow(str(peer_id)):
            self.drop("peer_filter")
            await self.reset_stream(stream)
            return
        try:
            await super().stream_handler(stream)
        except Exception as exc:  # hostile or broken peer: drop it, keep the host
            log.info("dropping pubsub stream from %s: %s: %s", peer_id, type(exc).__name__, exc)
            self.drop("malformed_rpc")
            await self.reset_stream(stream)
            self._handle_dead_peer(peer_id)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        try:
            await super().push_msg(msg_forwarder, msg)
        except Exception as exc:
            log.info("dropping pubsub message from %s: %s: %s", msg_forwarder, type(exc).__name__, exc)
            self.drop("pubsub_error")

    def _is_subscribed_to_msg(self, msg: rpc_pb2.Message) -> bool:
        """Called by the read loop for each received message before a task is spawned for it: the
        transport's early gate (``admit``) refuses a message here at the cost of a lookup."""
        return super()._is_subscribed_to_msg(msg) and self.admit(msg)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        self.on_accepted(publish_message)

    async def _teardown_if_connected(self, peer_id: ID) -> None:
        """Blacklisting tears the peer down in a background task; the library's version ``del``s the peer
        after an ``await``, by which time the dead-peer handler may have removed it: the ``KeyError`` then
        stopped the whole pubsub service (seen when evicting a peer). Remove it idempotently instead."""
        stream = self.peers.get(peer_id)
        if stream is not None:
            with suppress(Exception):
                await stream.reset()
            if self.peers.get(peer_id) is stream:
                self._handle_dead_peer(peer_id)
        self._forget_all_subscriptions(peer_id)


class LeanGossipSub(GossipSub):
    """Gossipsub for small, known neighbourhoods: what py-libp2p 0.8.1 spends bytes on that we do not need.

    With one topic per publisher, a topic's subscribers are exactly its owner's connected neighbours, so the
    owner reaches every one of them directly and relaying adds only copies. Measured on 16 peer processes
    (complete graph, 5 rounds): 41 MB on the wire for 1.1 MB of announcements. Here, each behaviour a knob of
    :class:`~p2pfl.transport.libp2p.config.Libp2pConfig`:

    * ``relay=False``: our own publishes go to *every* subscriber of our topic (py-libp2p sends them to the
      mesh only, at most ``degree_high`` peers, so the rest depended on relays); a message from someone else
      is not forwarded nor queued for a later subscriber (:func:`.compat_cpu.keep_unrelayed`), and no
      IDONTWANT is sent (nobody would send us a copy to cancel).
    * ``lazy_peers``: IHAVE gossip goes to this many non-mesh subscribers per topic and heartbeat
      (py-libp2p: at least 6, with the message ids of the last 3 heartbeats; 0 turns it off. A missed
      announcement costs a snapshot fetch, so recovery does not depend on it).
    * ``opportunistic_graft=False``: with all scores 0 the library grafts 2 peers per topic per heartbeat
      until the mesh passes ``degree_high`` and is pruned back, forever: the GRAFT/PRUNE storm and its
      GRAFT-flood penalties. Mesh replacement by score is off with it.
    * ``peer_records=False``: py-libp2p attaches the host's signed peer record (~250 bytes, verified by the
      receiver) to *every* RPC, control ones included; it stays on the first RPC of a stream only (the
      subscriptions hello), which is where a peer learns it.

    ``on_rpc(kind, nbytes)`` is told the size of every RPC queued, split into ``publish`` (messages),
    ``control`` and ``record`` (so a benchmark can tell announcements from gossip control).
    """

    relay: bool = True
    lazy_peers: int | None = None
    opportunistic_graft: bool = True
    peer_records: bool = True
    on_rpc: Callable[[str, int], None] | None = None

    def configure(
        self,
        *,
        relay: bool,
        lazy_peers: int | None,
        opportunistic_graft: bool,
        peer_records: bool,
        on_rpc: Callable[[str, int], None] | None = None,
    ) -> None:
        self.relay, self.lazy_peers = relay, lazy_peers
        self.opportunistic_graft, self.peer_records, self.on_rpc = opportunistic_graft, peer_records, on_rpc
        pubsub = getattr(self, "pubsub", None)
        if not peer_records and pubsub is not None:
            compat_cpu.records_stripped(pubsub.host)

    def attach(self, pubsub: Pubsub) -> None:
        super().attach(pubsub)
        if not self.peer_records:  # its records are stripped: the record may be reused (compat_cpu)
            compat_cpu.records_stripped(pubsub.host)

    def send_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, priority: bool = False) -> None:
        if not self.peer_records and rpc.HasField("senderRecord"):
            stripped = rpc_pb2.RPC()
            stripped.CopyFrom(rpc)
            stripped.ClearField("senderRecord")
            rpc = stripped
        count = self.on_rpc
        if count is not None:
            publish = sum(m.ByteSize() for m in rpc.publish)
            control = rpc.control.ByteSize() if rpc.HasField("control") else 0
            count("publish", publish)
            count("control", control)
            count("record", rpc.ByteSize() - publish - control)
        super().send_rpc(peer_id, rpc, priority)

    async def publish(self, msg_forwarder: ID, pubsub_msg: rpc_pb2.Message) -> None:
        pubsub = self.pubsub
        if self.relay or pubsub is None or pubsub_msg.from_id == pubsub.my_id.to_bytes():
            await super().publish(msg_forwarder, pubsub_msg)
        else:  # another peer's message, forwarded to nobody (compat_cpu)
            await compat_cpu.keep_unrelayed(self, msg_forwarder, pubsub_msg)

    def _get_peers_to_send(
        self, topic_ids: Iterable[str], msg_forwarder: ID, origin: ID, msg_id: bytes | None = None
    ) -> Iterable[ID]:
        if self.relay:
            yield from super()._get_peers_to_send(topic_ids, msg_forwarder, origin, msg_id)
            return
        pubsub, scorer = self.pubsub, self.scorer
        if pubsub is None or origin != pubsub.my_id:
            return  # not ours: the owner reached every subscriber itself
        send_to: set[ID] = set()
        for topic in topic_ids:
            for peer in pubsub.peer_topics.get(topic, ()):
                if peer not in self.peer_protocol:
                    continue  # not (yet) speaking gossipsub with us: queued by the caller instead
                if scorer is None or (
                    scorer.allow_gossip(peer, [topic]) and not scorer.is_graylisted(peer, [topic])
                ):
                    send_to.add(peer)
        yield from send_to - {msg_forwarder, origin}

    def _perform_opportunistic_grafting(self, topic: str, peers_to_graft: Any) -> int:
        if self.opportunistic_graft:
            return super()._perform_opportunistic_grafting(topic, peers_to_graft)
        return 0

    async def _consider_peer_replacement(self, topic: str) -> None:
        if self.opportunistic_graft:
            await super()._consider_peer_replacement(topic)

    def _get_adaptive_gossip_peers_count(self, topic: str, total_peers: int) -> int:
        if self.lazy_peers is None:
            return super()._get_adaptive_gossip_peers_count(topic, total_peers)
        return min(self.lazy_peers, max(total_peers, 0))

    async def _emit_idontwant_for_message(self, msg_id: bytes, topic_ids: Iterable[str]) -> None:
        if self.relay:
            await super()._emit_idontwant_for_message(msg_id, topic_ids)


def has_pubsub_stream(pubsub: Pubsub, pid: ID) -> bool:
    """Whether pubsub still holds a stream for ``pid``: it forgets the peer only once its last connection is
    gone, and ignores a redial made before that (the resync waits for it)."""
    return pid in pubsub.peers


def outbound_queue_lengths(pubsub: Pubsub) -> list[int]:
    """RPCs waiting in each peer's outbound queue. A full queue (:data:`OUTBOUND_QUEUE_SIZE`) drops new RPCs
    silently, so ``broadcast`` waits for room first (back-pressure)."""
    return [len(q) for q in pubsub.peer_queues.values()]


def topic_subscribers(pubsub: Pubsub, topic: str) -> set[ID]:
    """Peers that told us they subscribe to ``topic`` (pubsub keeps it in a public-looking dict)."""
    return set(pubsub.peer_topics.get(topic, ()))


def mesh_members(gossipsub: GossipSub, topic: str) -> set[ID]:
    """Our gossipsub mesh for ``topic``: the peers our publishes reach directly."""
    return set(gossipsub.mesh.get(topic, ()))


def peer_scorer(gossipsub: GossipSub) -> PeerScorer:
    """The router's peer scorer (GossipSub always builds one; the attribute is typed Optional)."""
    scorer = gossipsub.scorer
    if scorer is None:
        raise TransportError("gossipsub has no peer scorer")
    return scorer


def clear_equivocation_cache(gossipsub: GossipSub) -> None:
    """Gossipsub's equivocation detection keeps whole messages until it holds more than 1000 entries (30
    messages of 900 KB per router: memory grows without bound in practice); it is cleared periodically."""
    eq = getattr(gossipsub, "equivocation_detection", None)
    if isinstance(eq, dict):
        eq.clear()


# ------------------------------------------------------------------------------------------------- swarm
async def _noop() -> None:
    return None


def disable_auto_connector(network: INetwork) -> None:
    """The swarm's auto-connector dials peerstore entries every 30 s toward (low + high watermark) / 2 = 150
    connections, densifying the topology the application chose; it never starts if ``start`` does nothing."""
    auto = getattr(network, "auto_connector", None)
    if auto is not None:
        auto.start = _noop


def evict_negative_dial_cache(network: INetwork, peer_id: str) -> None:
    """A failed dial puts the peer in the swarm's negative cache, which refuses dials to it for 60 s; an
    explicit connect clears it so that dialling a peer that came back works at once."""
    negative = getattr(network, "_negative_peer_cache", None)
    if negative is not None:
        negative.evict(peer_id)


def connection_direction(conn: INetConn) -> Literal["inbound", "outbound", "unknown"]:
    """Who dialled: the resync lets the dialler (who knows a dialable address) redial."""
    direction = getattr(conn, "direction", Direction.UNKNOWN)
    if direction == Direction.INBOUND:
        return "inbound"
    if direction == Direction.OUTBOUND:
        return "outbound"
    return "unknown"


def tcp_socket_of(conn: object) -> trio.socket.SocketType | None:
    """The TCP socket under a py-libp2p connection, so ``abort`` can close it.

    py-libp2p can deadlock a yamux connection (both ends' send buffers full, each reader waiting for the
    write lock a blocked ``send_all`` holds) and a shielded stream reset then waits forever; closing the
    socket is the one thing that wakes it. The layers (swarm conn, yamux, secure session, noise
    reader-writer, raw connection, trio stream) differ between versions, so follow the attributes they use
    for "the layer below", a few levels deep, until a trio ``SocketStream``.
    """
    node: object = conn
    for _ in range(10):
        if isinstance(node, trio.SocketStream):
            return node.socket
        below = None
        for attr in ("muxed_conn", "secured_conn", "conn", "stream", "read_writer"):
            below = getattr(node, attr, None)
            if below is not None:
                break
        if below is None:
            return None
        node = below
    return None


# ----------------------------------------------------------------------------------------- wire bytes
class _CountingStream:
    """A raw connection's byte stream that adds what it reads and writes to ``stats.wire_*``. It keeps the
    stream below as ``stream``, so :func:`tcp_socket_of` still finds the socket."""

    def __init__(self, stream: object, stats: TransportStats) -> None:
        self.stream = stream
        self._stats = stats

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)  # type: ignore[attr-defined]
        self._stats.wire_sent += len(data)

    async def read(self, n: int | None = None) -> bytes:
        data: bytes = await self.stream.read(n)  # type: ignore[attr-defined]
        self._stats.wire_received += len(data)
        return data

    async def close(self) -> None:
        await self.stream.close()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:  # get_remote_address and whatever else a version adds
        return getattr(self.stream, name)


def count_wire_bytes(network: INetwork, stats: TransportStats) -> None:
    """Count every byte of every connection of ``network`` (handshakes, yamux and gossipsub control, relayed
    messages) in ``stats.wire_sent``/``wire_received``: the swarm hands each new raw connection, inbound or
    outbound, to ``upgrader.upgrade_security`` first, where its byte stream is wrapped. Per network (the
    upgrader is the swarm's own), so several hosts in one process count apart."""
    upgrader = network.upgrader  # type: ignore[attr-defined]
    inner = upgrader.upgrade_security

    async def upgrade_security(raw_conn: object, *args: object, **kwargs: object) -> object:
        stream = getattr(raw_conn, "stream", None)
        if stream is not None and not isinstance(stream, _CountingStream):
            raw_conn.stream = _CountingStream(stream, stats)  # type: ignore[attr-defined]
        return await inner(raw_conn, *args, **kwargs)

    upgrader.upgrade_security = upgrade_security
