"""Who a peer lets in: the allow-list and the roster, for connections, announcements and the mix.

Split out of :mod:`p2pfl.peer` because admission is one policy asked from three places (the transport's peer
filter, the engine's sender check, the engine's mix filter) and refreshed on its own clock (a newer roster,
a revoked member, an expired roster), while the peer's lifecycle and wiring do not depend on it. The roster
itself is :mod:`p2pfl.roster`; here is only how the peer applies it. :class:`PeerAccess` is a base of
:class:`~p2pfl.peer.Peer` and :func:`build_access` builds the peer's :class:`~p2pfl.roster.service.Access`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from p2pfl.config.schema import PeerConfig
from p2pfl.peer_rotation import LinkRotation
from p2pfl.protocol import GossipEngine
from p2pfl.roster.service import Access
from p2pfl.transport.base import Transport

__all__ = ["PeerAccess", "build_access"]

log = logging.getLogger("p2pfl.peer")


class PeerAccess:
    """The peer's admission checks and the roster refresh (a base of :class:`~p2pfl.peer.Peer`)."""

    config: PeerConfig
    #: membership of a closed network (``[access] roster``); None: open network
    access: Access | None
    #: the peer ids of the configured bootstrap registries
    _registries: frozenset[str]
    engine: GossipEngine
    _transport: Transport | None
    rotation: LinkRotation | None
    #: the peers this peer linked to itself (``mix_scope = "chosen"``; see :meth:`Peer.choose`)
    chosen: set[str]
    #: whether it ever chose one
    has_chosen: bool

    if TYPE_CHECKING:  # the peer's

        @property
        def transport(self) -> Transport: ...

        def neighbours(self) -> list[str]: ...

    def _gated(self) -> bool:
        return self.config.allow is not None or self.access is not None

    def _sender_allowed(self, peer_id: str) -> bool:
        """May ``peer_id``'s announcements be accepted (the allow-list and the roster)."""
        if self.config.allow is not None and peer_id not in self.config.allow:
            return False
        return self.access is None or self.access.allowed(peer_id)

    def _peer_allowed(self, peer_id: str) -> bool:
        """May ``peer_id`` connect: a sender we accept, or one of the configured bootstrap registries (the
        roster lists learners; a registry is connected to register and discover, never learns)."""
        if self.access is not None and peer_id in self._registries:
            return self.config.allow is None or peer_id in self.config.allow
        return self._sender_allowed(peer_id)

    def _may_dial(self, peer_id: str) -> bool:
        """May discovery or link rotation dial ``peer_id``: not evicted, one the access checks admit, and not
        resting after its link ended (link rotation)."""
        if self.rotation is not None and not self.rotation.link_allowed(peer_id):
            return False
        return not self.engine.is_evicted(peer_id) and self._peer_allowed(peer_id)

    async def _refresh_access(self) -> None:
        """Every ``roster_refresh_s``: adopt a newer roster (file or neighbours) and drop whoever the roster
        no longer admits (revoked, removed, or everyone once it has expired)."""
        access = self.access
        assert access is not None
        fed: object = None
        while True:
            access.reload()
            await access.poll(self.transport, self.neighbours())
            if (groups := access.groups()) != fed:  # a new roster, or a peer admitted by certificate
                self._feed_groups(*groups)
                fed = groups
            access.note_expiry()
            t = self.transport
            if access.refused_among(t.connected_peers()) and hasattr(t, "set_peer_filter"):
                t.set_peer_filter(self._peer_allowed)  # re-checks the connected peers: refused ones go
            await trio.sleep(self.config.roster_refresh_s)

    def _feed_groups(self, groups: dict[str, str], caps: dict[str, float]) -> None:
        """The roster's orgs and their share caps, for the engine's per-group mixing cap (when it has one)."""
        set_groups = getattr(self.engine, "set_groups", None)
        if set_groups is not None:
            set_groups(groups, caps)

    def _learning_link(self, peer_id: str) -> bool:
        """Does a connection with ``peer_id`` count as one of this peer's learning links, toward the degree
        discovery and link rotation keep: with ``mix_scope = "chosen"`` only a link this peer chose (one
        another peer dialled is not mixed)."""
        return self.config.mix_scope != "chosen" or peer_id in self.chosen

    def _listens_only(self) -> bool:
        """A peer that cannot choose: no static peers, no registries, and nobody ever named by
        ``Peer.connect`` or ``Peer.choose``. With ``mix_scope = "chosen"`` it mixes every connected peer,
        since its links are all other peers' choices (a server-like peer that only accepts). Once it chose,
        never again: neighbours that drop every link it chose must not open its mix to whoever dials in."""
        return not self.has_chosen and not self.config.bootstrap

    def _may_mix(self, peer_id: str) -> bool:
        """A replica enters the mix only while the roster admits its peer (a revoked member's last model is
        never mixed, whatever ``mix_scope``) and, with ``mix_scope = "connected"``, while it is connected;
        with ``"chosen"`` (the default), while it is connected and this peer chose the link (:attr:`chosen`;
        every connected peer for a peer that :meth:`_listens_only`). With either, never while its ended
        link rests (link rotation): a resting peer may still be connected, over libp2p for the moment a
        refused connection takes to close, and with ``"chosen"`` on a link it dialled itself."""
        if self.access is not None and self.access.gate.reason(peer_id, self.access.now_ms()) is not None:
            return False
        scope = self.config.mix_scope
        if scope == "all":
            return True
        if self.rotation is not None and not self.rotation.link_allowed(peer_id):
            return False
        if not self._learning_link(peer_id) and not self._listens_only():
            return False
        return self._transport is None or self._transport.is_connected(peer_id)


def build_access(config: PeerConfig, peer_id: str) -> Access | None:
    """The peer's roster access (``[access] roster``), or None for an open network."""
    if config.roster is None:
        return None
    access = Access(
        config.roster, config.network_id, certificates=config.certificates, state_dir=config.state_dir
    )
    why = access.gate.reason(peer_id, access.now_ms())
    if why is not None:  # it still runs: a newer roster may admit it; its neighbours refuse it until then
        log.warning(
            "this peer %s is not admitted by its own roster (%s): members will refuse it", peer_id, why
        )
    return access
