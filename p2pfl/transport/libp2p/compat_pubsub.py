"""Pubsub hardened against hostile peers, and the pubsub state the transport reads (a compat module: it
touches py-libp2p internals).

Split out of :mod:`.compat`, which re-exports every name here and must be imported first: it checks the
installed py-libp2p before any of these overrides exist (the package ``__init__`` imports it before any
other submodule). Kept apart from the gossipsub router (:mod:`.compat_gossipsub`) because this is about
surviving bad input and reading membership, not about what gossip sends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress

from libp2p.abc import INetStream, INetwork
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

__all__ = [
    "HardenedPubsub",
    "drop_stale_stream",
    "has_pubsub_stream",
    "outbound_queue_lengths",
    "stale_stream_peers",
    "topic_subscribers",
]

log = logging.getLogger("p2pfl.transport.libp2p")


class HardenedPubsub(Pubsub):
    """Pubsub that survives hostile input and hands accepted messages (with their forwarder) to the transport.

    * a malformed RPC raises protobuf's ``DecodeError`` out of the library's ``stream_handler`` and stops
      the pubsub service (the host with it): here it drops that peer's stream, never the host;
    * ``push_msg`` failures (an undecodable key, a raising sync validator) drop the message, never the
      service;
    * ``notify_subscriptions`` delivers straight to the transport instead of a 32-slot channel that drops
      silently when full;
    * a peer that opens a new pubsub stream to us is sent our subscriptions again (:meth:`announce_to`);
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
        self.announce_to(peer_id)
        try:
            await super().stream_handler(stream)
        except Exception as exc:  # hostile or broken peer: drop it, keep the host
            log.info("dropping pubsub stream from %s: %s: %s", peer_id, type(exc).__name__, exc)
            self.drop("malformed_rpc")
            await self.reset_stream(stream)
            self._handle_dead_peer(peer_id)

    def announce_to(self, peer_id: ID) -> None:
        """Send ``peer_id`` every topic we subscribe to, again (when we have a stream to it; else the first
        message of our stream, when it opens, carries them).

        A peer opens a new pubsub stream to us when it registers us anew, and then it may have forgotten our
        subscriptions: py-libp2p drops *all* of a peer's subscriptions whenever one of its streams fails (say
        the stream of a connection closed while a newer one is up), yet announces its own only in the first
        message of a stream it opens. The end whose stream survived never announced again, and the other end
        never sent it a message again: a live link on which gossip had stopped for good (crossing dials at
        start-up, docs/benchmarks.md). Announcing twice is harmless: a known subscription is ignored. Not rate
        limited: each announcement goes to the stream's opener itself (no amplification towards a third
        party); one that opens streams and never reads fills its own 32-slot queue sooner, as it would with
        our broadcasts, and then costs each broadcast the publish backpressure timeout."""
        queue = self.peer_queues.get(peer_id)
        if queue is None or not self.topic_ids:
            return
        packet = rpc_pb2.RPC(
            subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=t) for t in self.topic_ids]
        )
        if not queue.push(packet, priority=True):
            self.drop("pubsub_announce_dropped")

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

    async def _handle_new_peer(self, peer_id: ID) -> None:
        """Open our pubsub stream to a peer only over a connection that exists. The library's registration
        retry (``_handle_new_peer_with_retry``) sleeps between attempts and checks the connection only after
        a failure, so its next ``new_stream`` dialled a peer whose connection had closed meanwhile: after a
        resync's close that dial and the other end's redial formed a duplicate pair again (measured under
        CPU load: ``tests/transport/libp2p/test_transport.py``). Dialling is the connection layer's decision
        (:mod:`.connections`); the retry gives up on the ``SwarmException`` as on a lost connection."""
        conns = self.host.get_network().get_connections(peer_id)
        if peer_id not in self.peers and all(c.is_closed for c in conns):  # closing counts as closed
            raise SwarmException(f"no connection to {peer_id}: pubsub does not dial")
        await super()._handle_new_peer(peer_id)

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


def has_pubsub_stream(pubsub: Pubsub, pid: ID) -> bool:
    """Whether pubsub still holds a stream for ``pid``: it forgets the peer only once its last connection is
    gone, and ignores a redial made before that (the resync waits for it)."""
    return pid in pubsub.peers


def stale_stream_peers(pubsub: Pubsub, network: INetwork) -> list[ID]:
    """Peers whose pubsub stream rides a connection that is closed or gone while another one to them is open.

    Pubsub keeps one outbound stream per *peer* and reacts to connections per peer: a ``connected`` finds the
    stream it holds and opens none, a ``disconnected`` finds another connection and forgets nothing. When an
    old connection closes while a new one is up (a resync of crossing dials), the stream stays on the dead
    connection; it is found out only by a write, and a peer we know no subscription of is never written
    to. Such a peer is dropped from pubsub (:func:`drop_stale_stream`), which then opens a stream on the
    live connection."""
    stale = []
    for pid, stream in list(pubsub.peers.items()):
        live = [c.muxed_conn for c in network.get_connections(pid) if not c.is_closed]
        if live and all(stream.muxed_conn is not m for m in live):
            stale.append(pid)
    return stale


async def drop_stale_stream(pubsub: HardenedPubsub, pid: ID) -> None:
    """Forget ``pid``'s stream (and, as py-libp2p does then, its subscriptions; the peer announces them again
    when our new stream reaches it: :meth:`HardenedPubsub.announce_to`); pubsub opens a new one at once since
    ``pid`` is still connected. The old stream is reset, bounded."""
    stream = pubsub.peers.get(pid)
    if stream is None:
        return
    pubsub._handle_dead_peer(pid)
    await pubsub.reset_stream(stream)


def outbound_queue_lengths(pubsub: Pubsub) -> list[int]:
    """RPCs waiting in each peer's outbound queue. A full queue (:data:`.compat.OUTBOUND_QUEUE_SIZE`) drops
    new RPCs silently, so ``broadcast`` waits for room first (back-pressure)."""
    return [len(q) for q in pubsub.peer_queues.values()]


def topic_subscribers(pubsub: Pubsub, topic: str) -> set[ID]:
    """Peers that told us they subscribe to ``topic`` (pubsub keeps it in a public-looking dict)."""
    return set(pubsub.peer_topics.get(topic, ()))
