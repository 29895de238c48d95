"""Gossip: one topic per publisher, a sync validator per topic, paced publishing and peer scoring."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.score import PeerScorer, ScoreParams, TopicScoreParams

from p2pfl.errors import TransportError
from p2pfl.transport.base import GOSSIP, GossipHandler, GossipValidator, TransportStats
from p2pfl.transport.libp2p import compat
from p2pfl.transport.libp2p.config import Libp2pConfig

log = logging.getLogger("p2pfl.transport.libp2p")


def gossip_topic(network_id: str, peer_id: str) -> str:
    """The gossipsub topic ``peer_id`` publishes on; its connected peers subscribe to it.

    One topic per publisher keeps a peer's gossip work proportional to its degree. With one network-wide
    topic every peer received, verified and relayed every announcement of the network although it only mixes
    its neighbours' (32 peers on 2 cores: py-libp2p's gossip path saturated the CPU and starved the request
    streams that carry snapshots). Versioned so the wire format can change.
    """
    return f"p2pfl/{network_id}/deltas/2/{peer_id}"


def score_params(cfg: Libp2pConfig) -> ScoreParams:
    """Gossipsub scoring from ``cfg``. py-libp2p *subtracts* weights (``s -= weight * count``), so penalty
    weights are positive; its defaults (weights 0, thresholds ``-inf``) would make scoring do nothing."""
    return ScoreParams(
        p4_invalid_messages=TopicScoreParams(
            weight=cfg.invalid_message_weight, cap=1e6, decay=cfg.invalid_message_decay
        ),
        p5_behavior_penalty_weight=cfg.behaviour_penalty_weight,
        p5_behavior_penalty_decay=cfg.behaviour_penalty_decay,
        p5_behavior_penalty_threshold=0.0,
        publish_threshold=cfg.publish_threshold,
        gossip_threshold=cfg.gossip_threshold,
        graylist_threshold=cfg.graylist_threshold,
        accept_px_threshold=0.0,
    )


def make_gossipsub(cfg: Libp2pConfig, stats: TransportStats | None = None) -> compat.LeanGossipSub:
    """The router: 1 s heartbeat (the default is 120 s), adaptive gossip off (it raises the heartbeat to
    30-60 s on "poor health"), no peer exchange, spam protection at ``cfg.spam_limit_per_second``; relaying,
    lazy gossip, opportunistic grafting and per-RPC peer records as ``cfg`` says (see
    :class:`compat.LeanGossipSub`).
    RPC bytes queued are counted in ``stats.gossip_sent_by``."""
    router = compat.LeanGossipSub(
        protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
        degree=cfg.mesh_degree,
        degree_low=cfg.mesh_degree_low,
        degree_high=cfg.mesh_degree_high,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=cfg.heartbeat_interval,
        do_px=False,
        score_params=score_params(cfg),
        adaptive_gossip_enabled=False,
        spam_protection_enabled=True,
        max_messages_per_topic_per_second=cfg.spam_limit_per_second,
        pending_messages_ttl=cfg.pending_gossip_ttl,
    )
    router.configure(
        relay=cfg.gossip_relay,
        lazy_peers=cfg.gossip_lazy_peers,
        opportunistic_graft=cfg.opportunistic_graft,
        peer_records=cfg.gossip_peer_records,
        on_rpc=None if stats is None else stats.add_gossip_rpc,
    )
    return router


class GossipMixin:
    """Gossip of :class:`~p2pfl.transport.libp2p.Libp2pTransport`: publish, validate, deliver, score."""

    _config: Libp2pConfig
    _stats: TransportStats
    _id: ID
    _network_id: str
    _topic: str
    #: peer id -> its topic, for every peer whose announcements we subscribe to (never ourselves)
    _topics: dict[str, str]
    #: peers whose topics we do not subscribe to (see set_muted)
    _muted: frozenset[str]
    _gone_since: dict[str, float]
    _topics_changed: trio.Event
    _gossipsub: GossipSub
    _pubsub: compat.HardenedPubsub
    _scorer: PeerScorer
    _gossip_handler: GossipHandler | None
    _validator: GossipValidator | None
    #: claimed sender -> worth reading further (see set_gossip_gate)
    _gate: Callable[[str], bool] | None
    #: the validator's origin-aware form, if it has one (see set_gossip_validator)
    _validate_from: Callable[[str, str, bytes], bool] | None
    #: libp2p id bytes -> its text form, for the gate (bounded)
    _origin_names: dict[bytes, str]
    #: message id -> the peer that forwarded it to us (recorded by the validator, used on delivery)
    _forwarders: OrderedDict[bytes, str]
    _publish_lock: trio.Lock
    _next_publish: float
    _deliver_send: trio.MemorySendChannel[tuple[str, bytes]]
    _deliver_recv: trio.MemoryReceiveChannel[tuple[str, bytes]]

    if TYPE_CHECKING:

        def _require_running(self) -> None: ...
        def _parse_peer(self, peer_id: str) -> ID: ...
        def _peer_allowed(self, peer_id: str) -> bool: ...
        def connected_peers(self) -> list[str]: ...
        async def _heal_pubsub_streams(self) -> None: ...

    # ------------------------------------------------------------------------------------------ handlers
    def set_gossip_handler(self, handler: GossipHandler) -> None:
        self._gossip_handler = handler

    def set_gossip_validator(
        self,
        validator: GossipValidator,
        *,
        from_origin: Callable[[str, str, bytes], bool] | None = None,
        gate: Callable[[str], bool] | None = None,
    ) -> None:
        """Set the validator. ``from_origin(origin, forwarder, data) -> bool``, when given, is called instead,
        with the topic's owner as ``origin`` (only the owner publishes on its topic); ``gate`` becomes the
        early gate (see :meth:`set_gossip_gate`)."""
        self._validator = validator
        self._validate_from = from_origin
        if gate is not None:
            self.set_gossip_gate(gate)

    def set_muted(self, peers: frozenset[str]) -> None:
        """Do not subscribe to the topics of ``peers`` (left if subscribed): they send us no announcements. A
        secure-aggregation member mutes its fellows, whose announcements carry the group mean it already
        holds (docs/secagg.md)."""
        self._muted = frozenset(peers)
        self._topics_changed.set()

    def set_gossip_gate(self, gate: Callable[[str], bool] | None) -> None:
        """A check of a gossip message's claimed sender run where the message is read, before py-libp2p
        spawns a task and verifies the message's signature for it (each ~0.1-0.3 ms: a burst of 10,000
        packed in a few RPCs stalled peers for seconds). False drops it (counted ``gossip_gated``)."""
        self._gate = gate

    def _admit(self, msg: rpc_pb2.Message) -> bool:
        """The pubsub's read-loop hook (see :class:`compat.HardenedPubsub`). Never raises."""
        gate = self._gate
        if gate is None:
            return True
        try:
            origin = bytes(msg.from_id)
            if origin == self._id.to_bytes():
                return True
            name = self._origin_names.get(origin)
            if name is None:  # base58 costs ~30 us: a burst names one origin thousands of times
                name = self._origin_names[origin] = str(ID(origin))
                while len(self._origin_names) > 1024:
                    del self._origin_names[next(iter(self._origin_names))]
            if gate(name):
                return True
        except Exception as exc:  # an undecodable id: the library's checks refuse it later
            log.debug("gossip gate raised %s: %s", type(exc).__name__, exc)
            return True
        self._stats.drop("gossip_gated")
        return False

    # ---------------------------------------------------------------------------------------- operations
    async def broadcast(self, data: bytes) -> None:
        cfg = self._config
        if len(data) > cfg.gossip_max_bytes:
            raise TransportError(
                f"broadcast of {len(data)} bytes exceeds the gossip cap of {cfg.gossip_max_bytes} bytes; "
                "send large payloads over a request protocol"
            )
        self._require_running()
        async with self._publish_lock:
            # Pace: own publishes count against gossipsub's per-forwarder spam limit.
            now = trio.current_time()
            if self._next_publish > now:
                await trio.sleep(self._next_publish - now)
            self._next_publish = max(now, self._next_publish) + 1.0 / cfg.publish_rate_per_second
            # Back-pressure: a full outbound queue drops new RPCs silently.
            limit = compat.OUTBOUND_QUEUE_SIZE - 4
            with trio.move_on_after(cfg.publish_backpressure_timeout):
                while any(n > limit for n in compat.outbound_queue_lengths(self._pubsub)):
                    await trio.sleep(0.005)
            for n in compat.outbound_queue_lengths(self._pubsub):
                if n >= compat.OUTBOUND_QUEUE_SIZE - 1:
                    self._stats.drop("gossip_peer_queue_full")
            try:
                await self._pubsub.publish(self._topic, data)
            except Exception as exc:
                raise TransportError(f"publish failed: {type(exc).__name__}: {exc}") from exc
        self._stats.messages_sent += 1
        self._stats.add_sent(GOSSIP, len(data))

    def penalise(self, peer_id: str, amount: float | None = None) -> None:
        """Lower ``peer_id``'s gossipsub score (a behaviour penalty; it decays each heartbeat).

        Enough penalty takes the peer below the gossip, publish and graylist thresholds: it stops receiving
        our gossip, its messages are ignored, and mesh maintenance prefers other peers.
        """
        pid = self._parse_peer(peer_id)
        self._scorer.penalize_behavior(pid, self._config.penalty if amount is None else amount)

    # --------------------------------------------------------------------------------------- diagnostics
    def mesh_peers(self) -> list[str]:
        """Peers our publishes reach directly (diagnostics): every subscriber of our topic, or with
        ``gossip_relay`` on, our gossipsub mesh for it."""
        if self._config.gossip_relay:
            return [str(p) for p in compat.mesh_members(self._gossipsub, self._topic)]
        return [str(p) for p in compat.topic_subscribers(self._pubsub, self._topic)]

    def listeners(self) -> list[str]:
        """Connected peers subscribed to our announcements: the ones that learn from us (a bootstrap registry
        or a peer of another network never subscribes). Gossipsub learns a subscription ~1 RPC after the
        connection, so a freshly connected learner shows up here a moment later."""
        subscribers = compat.topic_subscribers(self._pubsub, self._topic)
        connected = set(self.connected_peers())
        return [str(p) for p in subscribers if str(p) in connected]

    def subscribed_peers(self) -> list[str]:
        """Peers whose announcements we subscribe to (connected now, or lately; diagnostics and tests)."""
        return list(self._topics)

    def peer_score(self, peer_id: str) -> float:
        """Current gossipsub score of ``peer_id`` over our topics (diagnostics)."""
        return float(self._scorer.score(self._parse_peer(peer_id), [self._topic, *self._topics.values()]))

    # ------------------------------------------------------------------------------------ receive path
    def _validate(self, owner: ID, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Sync validator of ``owner``'s topic (async ones break exactly-once delivery). Never raises."""
        try:
            if forwarder == self._id:
                return True  # our own publish
            if msg.from_id != owner.to_bytes() or len(msg.topicIDs) != 1:
                # only the owner publishes on its topic (libp2p signs from_id; strict signing checks it)
                self._stats.drop("gossip_wrong_topic")
                return False
            fwd, origin = str(forwarder), str(owner)  # (from_id is the owner's: its base58 is cached there)
            if not self._peer_allowed(fwd) or not self._peer_allowed(origin):
                self._stats.drop("peer_filter")
                return False
            data = bytes(msg.data)
            if len(data) > self._config.gossip_max_bytes:
                self._stats.drop("gossip_oversize")
                return False
            validator, from_origin = self._validator, self._validate_from
            if from_origin is not None:
                ok = from_origin(origin, fwd, data)
            else:
                ok = validator is None or validator(fwd, data)
            if not ok:
                self._stats.drop("gossip_invalid")
                return False
            self._forwarders[self._pubsub.get_message_id(msg)] = fwd
            while len(self._forwarders) > 4 * self._config.gossip_backlog:
                self._forwarders.popitem(last=False)
            return True
        except Exception as exc:
            log.debug("gossip validator raised %s: %s", type(exc).__name__, exc)
            self._stats.drop("gossip_validator_error")
            return False

    def _on_accepted(self, msg: rpc_pb2.Message) -> None:
        """Called by pubsub once per accepted, first-seen message (ours included)."""
        if msg.from_id == self._id.to_bytes() or len(msg.topicIDs) != 1:
            return
        topic = msg.topicIDs[0]
        if self._topics.get(topic.rpartition("/")[2]) != topic:
            return  # a topic we no longer subscribe to (left meanwhile)
        fwd = self._forwarders.pop(self._pubsub.get_message_id(msg), None)
        if fwd is None:
            self._stats.drop("gossip_unvalidated")
            return
        data = bytes(msg.data)
        self._stats.messages_received += 1
        self._stats.add_received(GOSSIP, len(data))
        try:
            self._deliver_send.send_nowait((fwd, data))
        except trio.WouldBlock:
            self._stats.drop("gossip_backlog_full")

    async def _deliver_loop(self) -> None:
        async for fwd, data in self._deliver_recv:
            handler = self._gossip_handler
            if handler is None:
                self._stats.drop("gossip_no_handler")
                continue
            try:
                await handler(fwd, data)
            except Exception as exc:  # the handler should never raise (Peer's does not): one line, go on
                log.error("gossip handler failed peer=%s error=%s: %s", fwd, type(exc).__name__, exc)
                log.debug("traceback of the failed gossip handler", exc_info=exc)
                self._stats.drop("gossip_handler_error")

    # ------------------------------------------------------------------------------------------ topics
    async def _topic_loop(self) -> None:
        """Subscribe to each connected peer's topic; leave the topics of peers gone for ``topic_linger_s``;
        move pubsub streams left on a closed connection to the live one (``_heal_pubsub_streams``). On every
        connection change and at least every ``topic_sync_interval``: a link converges within that bound."""
        while True:
            with trio.move_on_after(self._config.topic_sync_interval):
                await self._topics_changed.wait()
            self._topics_changed = trio.Event()
            try:
                await self._sync_topics(trio.current_time())
                await self._heal_pubsub_streams()
            except Exception as exc:  # a pubsub hiccup must not end the transport: retried next tick
                log.info("topic sync failed: %s: %s", type(exc).__name__, exc)

    async def _sync_topics(self, now: float) -> None:
        connected = {p for p in self.connected_peers() if self._peer_allowed(p) and p not in self._muted}
        for pid in connected:
            self._gone_since.pop(pid, None)
            if pid in self._topics:
                continue
            topic = gossip_topic(self._network_id, pid)
            self._pubsub.set_topic_validator(topic, partial(self._validate, self._parse_peer(pid)), False)
            self._topics[pid] = topic
            await self._pubsub.subscribe(topic)
        gone = [p for p in self._topics if p not in connected]
        for pid in gone:
            self._gone_since.setdefault(pid, now)
        # lingering topics are capped (identities churning through connections cannot grow them unbounded)
        excess = len(self._topics) - self._config.max_connections
        for pid in sorted(gone, key=lambda p: self._gone_since[p]):
            lingering = (
                self._peer_allowed(pid)
                and pid not in self._muted
                and now - self._gone_since[pid] < self._config.topic_linger_s
            )
            if lingering and excess <= 0:
                continue
            excess -= 1
            topic = self._topics.pop(pid)
            self._gone_since.pop(pid, None)
            await self._pubsub.unsubscribe(topic)
            self._pubsub.remove_topic_validator(topic)
