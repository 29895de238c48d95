"""The peer's side of link rotation (``[peer] rotate_every``; the decision: :mod:`p2pfl.protocol.rotation`).

After every ``rotate_every``-th round the peer dials peers it is not linked to and then closes its oldest
links, keeping ``rotate_degree`` learning links (0: ``max_neighbours``, the degree discovery dials up
to). Candidates come from a :data:`Candidates` source: by default the bootstrap registries' records (the
discovery cache when they are down); a host or a simulation may set its own
(:attr:`LinkRotation.candidates`). Static peers and secure-aggregation fellows are pinned: their links
are never closed. Evicted and refused peers are never dialled. A learning link that ends (closed by either
end, or lost) rests for ``rotate_cooldown`` link lifetimes (:class:`~p2pfl.protocol.rotation.Rest`): the
peer neither dials nor mixes its peer meanwhile (:meth:`LinkRotation.link_allowed`), and with ``mix_scope =
"connected"`` its transport refuses a link from it (the link filter; with ``"chosen"`` a link the other
peer dials is not mixed anyway).
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping

import trio

from p2pfl.errors import P2PFLError
from p2pfl.protocol.rotation import Rest, due, rotate

log = logging.getLogger("p2pfl.peer")

#: peer id -> a dial that returns whether the link was made (it must not raise for an unreachable peer)
Dial = Callable[[], Awaitable[bool]]
#: the peers a rotation may dial, each with its dial
Candidates = Callable[[], Awaitable[Mapping[str, Dial]]]


def address_candidates(connect: Callable[[str], Awaitable[object]], addrs: Mapping[str, str]) -> Candidates:
    """A :data:`Candidates` source over known addresses (peer id -> address), each dialled with ``connect``
    (``Peer.connect``): a host's own list of the network's peers, a simulation's plan. A dial that raises
    (the peer is not up, or refuses us) is a link not made (:meth:`LinkRotation.after_round` guards it)."""

    def dial(addr: str) -> Dial:
        async def go() -> bool:
            await connect(addr)
            return True

        return go

    dials = {pid: dial(addr) for pid, addr in addrs.items()}

    async def candidates() -> Mapping[str, Dial]:
        return dials

    return candidates


class LinkRotation:
    """Link ages and the rotation after a round; one per peer."""

    def __init__(
        self,
        *,
        every: int,
        degree: int,
        secret: bytes,
        me: str,
        links: Callable[[], list[str]],
        may_dial: Callable[[str], bool],
        disconnect: Callable[[str], Awaitable[None]],
        pinned: Callable[[], frozenset[str]],
        candidates: Candidates | None,
        cooldown: int = 0,
        ended: Callable[[str], None] = lambda peer_id: None,
    ) -> None:
        self.every = every
        #: the learning links kept
        self.degree = degree
        self._me = me
        self._links = links
        self._may_dial = may_dial
        self._disconnect = disconnect
        self._pinned = pinned
        #: told of each unpinned link that ended otherwise than by this rotation (the peer un-chooses it:
        #: a neighbour that drops its link and dials back is not the link this peer chose)
        self._ended = ended
        #: where a rotation finds peers to dial; None: no source (the rotation only trims extra links)
        self.candidates = candidates
        #: peer id -> the round its link was first seen
        self.linked_at: dict[str, int] = {}
        #: the links that ended (closed by either end, or lost), each refused for ``cooldown`` rounds
        self.rest = Rest(cooldown)
        #: the peer's last round that ended (the rests' clock)
        self.round = 0
        # keyed by the identity's secret (``Identity.secret_for``): a neighbour cannot predict whom this
        # peer drops or dials, and a simulated run repeats exactly
        self._rng = random.Random(secret)
        #: links made and closed by rotations since start (status and tests)
        self.dialled = 0
        self.closed = 0

    def status(self) -> dict[str, int]:
        """``status.json``'s ``rotation``: the settings and the links rotations made and closed."""
        return {
            "every": self.every,
            "degree": self.degree,
            "cooldown": self.rest.rounds,
            "dialled": self.dialled,
            "closed": self.closed,
            "resting": len(self.rest),
        }

    def link_allowed(self, peer_id: str) -> bool:
        """False while ``peer_id``'s ended link rests: it is not dialled nor mixed, and with ``mix_scope =
        "connected"`` the transport's link filter refuses its dial (its messages relayed by others still
        pass)."""
        return not self.rest.resting(peer_id, self.round)

    def note_links(self, round_: int) -> list[str]:
        """Record links first seen now (at ``round_``); a link that ended otherwise than by this peer's
        rotation (the neighbour's rotation closed it, the neighbour dropped it, the network did) rests
        too, unless pinned, and is chosen no more (``ended``). So both ends of a closed learning link rest
        (with ``mix_scope = "chosen"``, the ends that chose it): over libp2p a dial the other end refuses
        still looks made to the dialler for a moment (the refusal comes after the handshake), and a
        rotation that counted it closed a good link for it; and a neighbour that drops its own link to come
        back young (the ``refresh`` form of the simulation's ``[attack] redial``) is refused as well.
        Returns the links."""
        links = self._links()
        held = set(links)
        pinned = self._pinned()
        for p in list(self.linked_at):
            if p not in held:
                del self.linked_at[p]
                if p not in pinned:
                    self.rest.start(p, round_ - 1)
                    self._ended(p)
        for p in links:
            self.linked_at.setdefault(p, round_)
        return links

    async def after_round(self, round_: int) -> None:
        """Rotate if ``round_`` is due. A source or a dial that fails costs nothing but this rotation."""
        self.round = round_
        links = self.note_links(round_)
        turn = due(round_, self.every)
        if not turn and len(links) >= self.degree:  # between rotations: only a top-up, when below the degree
            return
        dials: Mapping[str, Dial] = {}
        if self.candidates is not None:
            try:
                dials = await self.candidates()
            except Exception as exc:  # a registry's answer must never end the peer: no rotation this time
                log.info("rotation: no candidates this time: %s: %s", type(exc).__name__, exc)
        pool = [p for p in dials if p != self._me and self._may_dial(p) and self.link_allowed(p)]
        decision = rotate(
            {p: self.linked_at[p] for p in links},
            pool,
            degree=self.degree,
            rng=self._rng,
            pinned=self._pinned(),
            turn=turn,
        )
        made = 0
        for p in decision.dial:
            if made >= decision.want:
                break
            if await _guarded(dials[p], f"dial {p}"):
                made += 1
                self.linked_at[p] = round_
        closing = decision.to_drop(made)
        for p in closing:
            self.rest.start(p, round_)  # first: a dial back while the close is under way is refused
            await _guarded(functools.partial(self._disconnect, p), f"close {p}")
            self.linked_at.pop(p, None)
        self.dialled += made
        self.closed += len(closing)
        if made or closing:
            links_now = len(self._links())
            log.info("rotation round=%d dialled=%d closed=%d links=%d", round_, made, len(closing), links_now)
        await trio.lowlevel.checkpoint()


async def _guarded(call: Callable[[], Awaitable[object]], what: str) -> object:
    """One dial or close: what it returns, or None if it raised. Whatever it raises costs this link only,
    never the round loop (a remote peer's answer or a transport's bug must not end the peer)."""
    try:
        return await call()
    except Exception as exc:
        level = logging.INFO if isinstance(exc, P2PFLError) else logging.WARNING
        log.log(level, "rotation: %s failed: %s: %s", what, type(exc).__name__, exc)
        return None
