"""How a peer's parts are built and wired: the engine, the exchange, the round loop, metrics, discovery, and
the transport's handlers.

Split out of :mod:`p2pfl.peer` because assembling the parts (which callbacks each one gets, which options
switch them on) is one concern and running them (the lifecycle, the public API) another; the builders take
the :class:`~p2pfl.peer.Peer` they build for and are called once from its ``__init__`` (and
:func:`attach_transport` once from ``__aenter__``), in the order they were written in there.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from p2pfl.config.schema import PeerConfig
from p2pfl.identity import Identity
from p2pfl.peer_discovery import PeerDiscovery
from p2pfl.peer_exchange import Exchange
from p2pfl.peer_rotation import LinkRotation
from p2pfl.peer_rounds import RoundLoop, RoundParts
from p2pfl.protocol import DELTA_PROTOCOL, SNAPSHOT_PROTOCOL, GossipEngine
from p2pfl.protocol.dialling import addr_peer_id
from p2pfl.roster.service import ROSTER_PROTOCOL
from p2pfl.transport.base import Transport

if TYPE_CHECKING:
    from p2pfl.peer import Peer

__all__ = [
    "TransportFactory",
    "attach_transport",
    "build_discovery",
    "build_engine",
    "build_exchange",
    "build_metrics",
    "build_rounds",
    "export_privacy",
    "libp2p_factory",
]

TransportFactory = Callable[[Identity], Any]  # returns an async context manager yielding a Transport

log = logging.getLogger("p2pfl.peer")


def libp2p_factory(config: PeerConfig, max_request: Callable[[], int] = lambda: 0) -> TransportFactory:
    """``max_request``: raises the transport's request cap to what it returns (a secagg group's messages)."""

    def factory(identity: Identity) -> Any:
        from p2pfl.transport.libp2p import Libp2pConfig, Libp2pTransport

        lib = Libp2pConfig(
            inbound_rate=float(config.inbound_rate),
            inbound_burst=float(config.inbound_burst),
            inbound_handshakes=config.inbound_handshakes,
        )
        if (cap := max_request()) > lib.max_request_bytes:
            lib = dataclasses.replace(lib, max_request_bytes=cap)
        return Libp2pTransport.open(
            seed=identity.seed, network_id=config.network_id, listen=config.listen, config=lib
        )

    return factory


def build_engine(peer: Peer) -> GossipEngine:
    """The engine, with the peer's access checks as its sender gate and mix filter when they apply."""
    config = peer.config
    return GossipEngine(
        peer.identity,
        config.protocol(),
        peer.learner.get_params(),
        aggregation=config.aggregation,
        scoring=config.scoring,
        scoring_enabled=config.scoring_enabled,
        rates=config.rates,
        allowed=peer._sender_allowed if peer._gated() else None,
        mix_filter=peer._may_mix if config.mix_scope != "all" or peer.access else None,
    )


def build_exchange(peer: Peer) -> Exchange:
    """The network side; a replica's new version wakes the round loop's pacing wait."""
    return Exchange(
        peer.engine,
        lambda: peer.transport,
        peer._running_nursery,
        lambda: peer.rounds.note_update(),  # noqa: PLW0108 - the loop is built after the exchange
        max_model_bytes=peer.config.max_model_bytes,
        request_timeout_s=peer.config.request_timeout_s,
    )


def build_rounds(peer: Peer) -> RoundLoop:
    """The round loop over the peer's parts (the learner timed when metrics are on)."""
    parts = RoundParts(
        peer.config,
        peer.engine,
        peer.metrics.timed(peer.learner) if peer.metrics is not None else peer.learner,
        peer.store,
        peer.exchange,
        peer._run_sync,
        neighbours=peer.neighbours,
        transport=lambda: peer.transport,
        write_status=peer.write_status,
        stopped=peer._stopped,
        on_round=peer._on_round,
        rollout=peer.rollout,
        secagg=lambda: peer.secagg,
        privacy=peer.privacy,
        rotate=peer.rotation.after_round if peer.rotation is not None else None,
    )
    return RoundLoop(parts)


def build_rotation(peer: Peer) -> LinkRotation | None:
    """Link rotation (``[peer] rotate_every``), dialling the registries' peers; None when off."""
    config = peer.config
    if not config.rotate_every:
        return None
    # static peers, and the secure-aggregation group's fellows (their group channel runs over these links)
    pinned = frozenset(addr_peer_id(a) for a in config.static_peers) | (
        frozenset(config.secagg.members) - {peer.peer_id} if config.secagg.enabled else frozenset()
    )
    if config.bootstrap and not peer._gated():
        log.warning(
            "link rotation in an open network: every rotation dials identities from the registries, which "
            "anyone can fill with fresh keys; run it with an [access] roster (docs/learning.md)"
        )

    async def disconnect(peer_id: str) -> None:
        unchoose(peer_id)  # a link the rotation closed is no longer chosen
        await peer.transport.disconnect(peer_id)

    def unchoose(peer_id: str) -> None:  # (Peer.choose may replace the set: look it up each time)
        peer.chosen.discard(peer_id)

    return LinkRotation(
        every=config.rotate_every,
        degree=config.learning_degree,
        secret=peer.identity.secret_for(b"p2pfl-rotation"),
        me=peer.peer_id,
        links=lambda: [p for p in peer.neighbours() if peer._learning_link(p)],
        may_dial=peer._may_dial,
        disconnect=disconnect,
        pinned=lambda: pinned,
        candidates=peer.discovery.rotation_candidates,
        cooldown=config.cooldown_rounds,
        ended=unchoose,
    )


def build_metrics(peer: Peer, option: Any) -> str | None:
    """Set up ``peer.metrics`` as ``option`` (see ``__init__``) asks; returns where to serve (or None)."""
    listen = option if isinstance(option, str) else peer.config.metrics_listen
    if option is False or (option is None and listen is None):
        return None
    from p2pfl.metrics import parse_listen
    from p2pfl.metrics.peer_metrics import PeerMetrics

    if listen is not None:
        parse_listen(listen)
    peer.metrics = PeerMetrics(peer, None if isinstance(option, str | bool) else option)
    peer.exchange.observers.append(peer.metrics.on_action)
    return listen


def export_privacy(peer: Peer) -> None:
    """The metrics' ``p2pfl_privacy_epsilon_spent`` gauge reads the epsilon spent (DP and metrics on)."""
    privacy = peer.privacy
    if peer.metrics is not None and privacy is not None:
        peer.metrics.set_privacy_budget_source(lambda: privacy.spent(peer.engine.seq))


def build_discovery(peer: Peer) -> PeerDiscovery:
    """Registry discovery: it never dials an evicted peer or one the access checks refuse."""
    return PeerDiscovery(
        peer.config,
        peer.identity,
        lambda: peer.transport,
        may_dial=peer._may_dial,
        unexpected=peer.exchange.unexpected,
        chose=lambda peer_id: peer.choose((peer_id,)),
        counts=peer._learning_link,
    )


def attach_transport(peer: Peer, t: Transport) -> None:
    """Hand the running transport the peer's gossip validator and handlers, its request handlers and peer
    filter, and join the secure-aggregation group over it (``[secagg] enabled``)."""
    t.set_gossip_validator(peer.exchange.validate_gossip)
    if hasattr(t, "set_gossip_gate"):  # libp2p: origin-aware validator, early gate (docs/protocol.md)
        lib: Any = t
        lib.set_gossip_validator(
            peer.exchange.validate_gossip,
            from_origin=peer.exchange.validate_from,
            gate=peer.exchange.admit_sender,
        )
    t.set_gossip_handler(peer.exchange.on_gossip)
    t.set_request_handler(DELTA_PROTOCOL, peer.exchange.serve_delta)
    t.set_request_handler(SNAPSHOT_PROTOCOL, peer.exchange.serve_snapshot)
    if peer._gated() and hasattr(t, "set_peer_filter"):
        t.set_peer_filter(peer._peer_allowed)
    # an ended link rests (p2pfl.protocol.rotation): the transport refuses it from either end. Not with
    # mix_scope = "chosen": a link another peer dials is not mixed anyway, and over libp2p a refused dial
    # looks made to the dialler until the refusal arrives after the handshake, so its rotation counted a
    # link that never was and closed a good one for it (only the end that chose a link rests it there)
    if (
        peer.rotation is not None
        and peer.rotation.rest.rounds
        and peer.config.mix_scope != "chosen"
        and hasattr(t, "set_link_filter")
    ):
        t.set_link_filter(peer.rotation.link_allowed)
    if peer.access is not None:
        t.set_request_handler(ROSTER_PROTOCOL, peer.access.serve)
    if peer.config.secagg.enabled and peer.secagg is None:  # docs/secagg.md: /p2pfl/secagg/1
        from p2pfl.secagg.channel import join_group

        dim = int(peer.engine.layout.size)
        peer.secagg, peer.secagg_channel = join_group(
            peer.config.secagg,
            peer.identity,
            peer.config.network_id,
            t,
            dim,
            state_dir=peer.config.state_dir,
        )
    if peer.secagg is not None and hasattr(t, "set_muted"):  # fellows' announcements: our own mean
        t.set_muted(peer.secagg.fellows())
