"""A peer's side of the bootstrap registries: register (renewed in the background), find and dial the
network's peers, withdraw the registration on a clean stop. Registries are connected but never learning
neighbours: they must not satisfy ``min_neighbours``."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from p2pfl.errors import P2PFLError
from p2pfl.identity import Identity
from p2pfl.peer_rotation import Dial
from p2pfl.protocol.dialling import addr_peer_id
from p2pfl.transport.base import Transport

if TYPE_CHECKING:
    # trio's own TaskStatus is shadowed by the trio-typing stubs that libp2p pulls in.
    from trio_typing import TaskStatus

    from p2pfl.peer import PeerConfig

log = logging.getLogger("p2pfl.peer")

#: A stopping peer withdraws its registration from the bootstrap registries for at most this long.
UNREGISTER_TIMEOUT_S = 3.0


class PeerDiscovery:
    """Discovery for one peer; ``client`` exists once :meth:`start` ran (only with ``config.bootstrap``)."""

    def __init__(
        self,
        config: PeerConfig,
        identity: Identity,
        transport: Callable[[], Transport],
        *,
        may_dial: Callable[[str], bool],
        unexpected: Callable[[str | None, str, Exception], None],
        chose: Callable[[str], None] = lambda peer_id: None,
        counts: Callable[[str], bool] = lambda peer_id: True,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self._transport = transport
        #: a peer id we may dial (not evicted, allowed)
        self._may_dial = may_dial
        self._unexpected = unexpected
        #: told of each peer discovery linked (the peer's chosen links, ``mix_scope = "chosen"``)
        self._chose = chose
        #: whether a connected peer counts toward ``learning_degree``: with ``mix_scope = "chosen"`` only
        #: links this peer chose do (a link another peer dialled is not mixed, so it is not a learning link)
        self._counts = counts
        #: draws the dial order (p2pfl.discovery.policy.select_dials) from the OS's randomness, so no member
        #: can predict it
        self._rng = rng if rng is not None else random.SystemRandom()
        #: peer ids of the configured registries (the client learns more: registry_ids)
        self._registries = frozenset(addr_peer_id(a) for a in config.bootstrap)
        self.client: Any = None
        self._scope = trio.CancelScope()

    def registry_ids(self) -> frozenset[str]:
        if self.client is None:
            return self._registries
        ids: frozenset[str] = self._registries | self.client.registry_peer_ids
        return ids

    def neighbours(self) -> list[str]:
        """Connected peers that may be learning neighbours: every connection but a registry's."""
        registries = self.registry_ids()
        return [p for p in self._transport().connected_peers() if p not in registries]

    async def start(self, nursery: trio.Nursery) -> None:
        """Register with the bootstrap registries (renewed in the background) and dial the peers they, or
        the peer cache when every registry is down, know of. Only signed peer records are dialled."""
        from p2pfl.discovery import BootstrapClient, PeerCache

        config = self.config
        cache = None
        if config.state_dir is not None:
            cache = PeerCache.in_state_dir(
                config.state_dir, network_id=config.network_id, own_peer_id=self.identity.peer_id
            )
        self.client = BootstrapClient(
            self._transport(),
            self.identity,
            config.network_id,
            config.bootstrap,
            ttl=config.bootstrap_ttl,
            advertise=list(config.advertise) or None,
            cache=cache,
        )
        await nursery.start(self._renewal)
        await self.discover()
        nursery.start_soon(self._loop)

    async def _renewal(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._scope:  # cancelled first on a clean stop (see unregister)
            await self.client.run_renewal(task_status=task_status)

    async def discover(self) -> int:
        """Dial known peers of the network, in a random order, until ``learning_degree`` learning links
        are up; returns how many were added. A peer already connected that the draw reaches (it dialled
        us) is chosen without a dial when only chosen links count."""
        from p2pfl.discovery import dial_record, select_dials

        if self.client is None:
            return 0
        records = await self.client.find_peers()
        connected = set(self.neighbours())
        linked = {p for p in connected if self._counts(p)}
        registries = self.registry_ids()
        added = 0
        for record in select_dials(
            records,
            own_peer_id=self.identity.peer_id,
            connected=linked,
            refused=lambda pid: pid in registries or not self._may_dial(pid),
            rng=self._rng,
        ):
            if len(linked) >= self.config.learning_degree:
                break
            pid = record.peer_id
            if pid not in connected and await dial_record(self._transport(), record) is None:
                continue
            linked.add(pid)
            self._chose(pid)
            added += 1
        return added

    async def rotation_candidates(self) -> dict[str, Dial]:
        """The network's peers a link rotation may dial (p2pfl.peer_rotation): the registries' records, or
        the cache when none answers; none without registries."""
        from p2pfl.discovery import PeerRecord, dial_record

        if self.client is None:
            return {}
        registries = self.registry_ids()
        out: dict[str, Dial] = {}
        for record in await self.client.find_peers():
            if record.peer_id in registries or record.peer_id == self.identity.peer_id:
                continue

            async def dial(record: PeerRecord = record) -> bool:
                if await dial_record(self._transport(), record) is None:
                    return False
                self._chose(record.peer_id)
                return True

            out[record.peer_id] = dial
        return out

    async def _loop(self) -> None:
        while True:
            await trio.sleep(self.config.discover_interval_s)
            try:
                new = await self.discover()
            except P2PFLError as exc:
                log.info("discovery failed: %s", exc)
                continue
            except Exception as exc:  # a registry's answer must never end the peer: retried next interval
                self._unexpected(None, "discovery", exc)
                continue
            if new:
                log.info("discovery: dialled %d new peers", new)

    async def unregister(self) -> None:
        """Withdraw our record from the registries (bounded; failures only logged): a stopped peer should not
        be handed out to others until its registration expires."""
        if self.client is None:
            return
        self._scope.cancel()  # no renewal may race the withdrawal
        with trio.move_on_after(UNREGISTER_TIMEOUT_S):
            try:
                n = await self.client.unregister()
                log.info("unregistered from %d of %d registries", n, len(self.config.bootstrap))
            except Exception as exc:
                log.info("unregister failed: %s: %s", type(exc).__name__, exc)
