"""The real-network transport: a py-libp2p 0.8.1 host with gossipsub and length-prefixed request streams.

Usage::

    async with Libp2pTransport.open(seed=seed32, network_id="demo", listen="/ip4/127.0.0.1/tcp/0") as t:
        t.set_gossip_handler(on_gossip)
        await t.connect("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...")
        await t.broadcast(b"...")
        resp = await t.request(peer_id, "/p2pfl/delta/1", b"req", max_response=64 << 20, timeout=10.0)

The package, by concern:

* :mod:`.host`: identity, host construction and lifecycle; :class:`Libp2pTransport` combines the three
  mixins below.
* :mod:`.streams`: stream framing and the request/response protocols (bounded count, size and time).
* :mod:`.gossip`: one topic per publisher (its subscribers are exactly its connected neighbours, each reached
  directly: no relays), validation, paced publishing, score parameters.
* :mod:`.connections`: the access filter and block list, dialling, duplicate-pair resync, the watchdog.
* :mod:`.config`: :class:`Libp2pConfig`, every tunable, validated in one place.
* :mod:`.compat`: the gate to py-libp2p internals: it refuses an unsupported version at import and
  re-exports the workarounds of :mod:`.compat_pubsub` (hardened pubsub), :mod:`.compat_gossipsub` (the lean
  router) and :mod:`.compat_swarm` (dialling, connections, wire bytes). The ``compat*`` modules are the only
  ones that touch internals; it is imported first, so its check runs before any of them.
* :mod:`.compat_frames`: yamux frame writes that a cancelled caller cannot cut in half (py-libp2p's can,
  which broke the connection for every other stream on it), on the fast path and off it.
* :mod:`.compat_noise`, :mod:`.compat_yamux`: the payload fast path (``Libp2pConfig.fast_streams``): the same
  Noise and yamux wire protocol as py-libp2p's, with batched socket I/O, one Noise message per yamux frame,
  event-driven window waits, large receive windows and a total frame reader.

What the defaults of py-libp2p 0.8.1 get wrong for us, and where it is handled (each point was checked
against the library's source):

* ``new_host`` offers Noise, TLS, SECIO *and plaintext* security and Yamux *and* Mplex; we pass Noise and
  Yamux only, so a peer cannot negotiate a weaker channel (:func:`.host._build_host`).
* Dialing waits 250 ms (happy eyeballs) unless ``max_connections_per_peer=1`` (:func:`.host._build_host`).
* The swarm's auto-connector dials peerstore entries toward (low+high watermark)/2 = 150 connections; its
  ``start`` is replaced by a no-op so the topology stays the one the application chose
  (:func:`.compat.disable_auto_connector`).
* Gossipsub's heartbeat defaults to 120 s, and with adaptive gossip on it is *raised* to 30-60 s whenever the
  router judges the network unhealthy: adaptive gossip is off and the heartbeat is 1 s
  (:func:`.gossip.make_gossipsub`).
* Gossipsub sends our own publishes to the mesh only (at most ``degree_high`` peers; the rest waited for
  relays), relays every message to every mesh member (each peer got each announcement ~D times), sends IHAVE
  to at least 6 peers per topic per heartbeat, grafts opportunistically forever when all scores are 0 (GRAFT
  storms) and attaches a signed peer record to every RPC: :class:`.compat.LeanGossipSub` turns each off
  behind a :class:`Libp2pConfig` knob (``gossip_relay``, ``gossip_lazy_peers``, ``opportunistic_graft``,
  ``gossip_peer_records``). 16 peers, 5 rounds: 41 MB on the wire became 17 MB (raw deltas).
* ``Swarm.close`` closes connections one by one with a 0.1 s sleep each: the transport closes them all at
  once first (:meth:`.host.Libp2pTransport._close_connections`).
* Payload streams ran at 58-64 MB/s between two processes (bench_transfer): py-libp2p's yamux sends a
  WINDOW_UPDATE per read and polls an empty send window every 10 ms; its Noise session reads every message
  with two socket reads and writes every frame with its own ``send``, a 64 KiB yamux frame as two Noise
  messages. :mod:`.compat_noise` and :mod:`.compat_yamux` keep the wire protocol and cut those costs
  (:func:`.host._build_host`; a stock py-libp2p peer interoperates, tested).
* Score parameters are subtracted in ``score.py`` (``s -= weight * count``): a penalty weight must be
  *positive* here, unlike go-libp2p. Defaults are all 0 and thresholds ``-inf`` (scoring does nothing)
  (:func:`.gossip.score_params`).
* A sync topic validator that raises escapes ``push_msg`` and can stop the pubsub service; a malformed RPC
  raises protobuf's ``DecodeError`` out of the pubsub stream handler and takes the host down. Both are
  wrapped (:class:`.compat.HardenedPubsub`), which also makes the eviction teardown idempotent.
* ``Pubsub.publish`` delivers our own messages to our own subscription; they are filtered out
  (:meth:`.gossip.GossipMixin._on_accepted`).
* Spam protection (10 msg/s per forwarder per topic, own publishes included) drops *forwarding* silently and
  penalises the forwarder: one honest relay in a small network passes that easily. The limit is raised to
  100/s and our own publishes are paced well below it and below the 32-RPC outbound queue per peer
  (:meth:`.gossip.GossipMixin.broadcast`, :func:`.compat.outbound_queue_lengths`).
* ``equivocation_detection`` keeps whole messages until it holds >1000: cleared every few seconds
  (:func:`.compat.clear_equivocation_cache`).
* Listeners use SO_REUSEPORT (a busy port "works" and shares connections) and ``Swarm.listen`` reports
  failure only by return value: a fixed port is probed first and an empty listener set raises
  (:func:`.host._check_port_free`, :meth:`.host.Libp2pTransport._run`).
* The swarm's inbound handler takes one of ``max_connections`` inbound slots per accepted connection and
  gives it back only when the *swarm* ends: after ``max_connections`` (300) arrivals over a host's life,
  however short each stayed, every inbound connection is refused (measured: the 301st of 305
  connect-and-leave cycles failed with 300 of 300 slots taken and no connection alive). Our handler keeps a
  slot while its connection lives, and asks the inbound gate (:mod:`p2pfl.transport.inbound`: a rate and a
  count of handshakes in flight per source) before each Noise handshake
  (:func:`.compat.gate_inbound_connections`).
* A failed dial puts the peer in a 60 s negative cache and only one stored TCP address per peer is tried:
  an explicit :meth:`Libp2pTransport.connect` clears both for that peer first
  (:func:`.compat.evict_negative_dial_cache`).
* Two peers dialling each other at once both keep their connection (``max_connections_per_peer`` trims
  only after a 20 s grace period). Gossip works over such a pair until one of the two closes; then pubsub,
  which keeps one stream and one subscription set per *peer*, forgets the peer's subscriptions on one side
  while the other side keeps a dead stream, and gossip between the two stops for good. Every duplicate or
  partially closed pair is therefore *resynced*: both ends close the old connections and the end that can
  (the dialler; the lower peer id when both dialled) dials again, so pubsub starts over on one clean
  connection (:meth:`.connections.ConnectionsMixin._resync`). The resync races the other end's dials and
  pubsub's own handling of them, and two states outlived it, each a live link on which gossip had stopped
  for good (4 transport processes dialling each other under load: 2-5 of 8 trials): pubsub's stream left on
  a closed connection (pubsub reacts to connections per *peer*, so a new connection found the old stream and
  a closed one found another connection) and a peer's subscriptions forgotten by one end (pubsub forgets all
  of them when any stream of the peer fails, and a peer announces its own only on a stream it opens). A stale
  stream is reopened on the live connection within a second (:meth:`.connections.ConnectionsMixin.
  _heal_pubsub_streams`) and a peer that opens a stream to us is sent our subscriptions again
  (:meth:`.compat.HardenedPubsub.announce_to`). A connection whose close has begun no longer counts as open
  (the swarm lists it until the close ends, and a close cancelled midway never ends it). Pubsub's
  stream-registration retry, which sleeps between attempts and checked the connection only after a failure,
  no longer dials a peer whose connection closed meanwhile (:meth:`.compat.HardenedPubsub._handle_new_peer`;
  under CPU load it dialled while a resync awaited the other end's redial, and the pair was duplicated again).
* A yamux connection can deadlock with both ends' send buffers full, and a shielded stream reset then waits
  forever: a request overdue past its timeout, cleanup and a grace period gets its connection's socket
  closed (:meth:`.connections.ConnectionsMixin.abort`, :func:`.compat.tcp_socket_of`).
* Importing libp2p sets its logger to ``propagate=False`` without handlers (warnings land on stderr via
  logging's last resort): see :func:`.compat.quiet_libp2p_logging`.

Every submodule logs to the ``p2pfl.transport.libp2p`` logger.
"""

from __future__ import annotations

from collections.abc import Callable

from p2pfl.transport.libp2p.compat import UnsupportedLibp2pError
from p2pfl.transport.libp2p.config import Libp2pConfig
from p2pfl.transport.libp2p.gossip import gossip_topic
from p2pfl.transport.libp2p.host import Libp2pTransport, check_listen_port

__all__ = [
    "Libp2pConfig",
    "Libp2pTransport",
    "PeerFilter",
    "UnsupportedLibp2pError",
    "check_listen_port",
    "gossip_topic",
]

#: Access-control hook: peer id -> allowed?
PeerFilter = Callable[[str], bool]
