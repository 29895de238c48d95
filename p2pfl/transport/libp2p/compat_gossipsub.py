"""The gossipsub router p2pfl runs, and the router state the transport reads (a compat module: it touches
py-libp2p internals).

Split out of :mod:`.compat`, which re-exports every name here and must be imported first: it checks the
installed py-libp2p (and installs :mod:`.compat_cpu`, which :class:`LeanGossipSub` relies on) before any of
these overrides exist; the package ``__init__`` imports it before any other submodule. Kept apart from
:mod:`.compat_pubsub` because this is about what gossip sends and to whom (bytes on the wire, mesh,
scores), not about surviving bad input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import PeerScorer

from p2pfl.errors import TransportError
from p2pfl.transport.libp2p import compat_cpu

__all__ = ["LeanGossipSub", "clear_equivocation_cache", "mesh_members", "peer_scorer"]


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
