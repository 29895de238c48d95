"""The bootstrap registry: a bounded, expiring map network id -> signed peer records, served over libp2p.

:class:`Registry` (in :mod:`bootstrap.registry`) is the sans-I/O core (no sockets, no clock of its own:
callers pass ``now``), so every rule is tested without a network. :class:`BootstrapService` serves it on
``/p2pfl/bootstrap/1`` through any transport with ``set_request_handler`` and runs the expiry sweep;
:func:`serve` builds the libp2p host.

Rules (spec in ``docs/bootstrap.md``):

* a register request carries a :class:`~p2pfl.discovery.PeerRecord` signed by the requester itself: the
  requester's peer id is the one Noise authenticated, so a peer can register only itself;
* records are stored and returned verbatim, so discoverers verify signatures themselves;
* each registration expires after its ttl, clamped to ``[min_ttl, max_ttl]``; a newer seq replaces an older
  record, an older one is refused (no replay);
* caps: networks, registrations per network, per peer, in total, and a token bucket per peer (one libp2p
  connection per peer); every request that breaks a rule gets an error response, none raises.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pfl.discovery import MAX_REQUEST_BYTES, PROTOCOL_ID
from p2pfl.errors import TransportError
from p2pfl.identity import Identity
from p2pfl.transport.base import RequestHandler

from .registry import Registry, RegistryConfig

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from p2pfl.transport.libp2p import Libp2pTransport

__all__ = ["BootstrapService", "Registry", "RegistryConfig", "serve"]

log = logging.getLogger("bootstrap")
status_log = logging.getLogger("bootstrap.status")


def _rss_kib() -> int | None:
    """Resident set size of this process in KiB (Linux), for status output."""
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class RequestServer(Protocol):
    """What the service needs from a transport (both p2pfl transports satisfy it)."""

    @property
    def peer_id(self) -> str: ...

    def set_request_handler(self, protocol: str, handler: RequestHandler) -> None: ...


class BootstrapService:
    """Serves a :class:`Registry` on ``/p2pfl/bootstrap/1`` and sweeps expired records."""

    def __init__(
        self,
        transport: RequestServer,
        registry: Registry,
        *,
        sweep_interval: float = 1.0,
        status_interval: float = 0.0,
    ) -> None:
        self.transport = transport
        self.registry = registry
        self.sweep_interval = sweep_interval
        self.status_interval = status_interval
        self._started = 0.0

    async def _handle(self, requester: str, data: bytes) -> bytes:
        return self.registry.handle(requester, data, trio.current_time())

    def process_info(self) -> dict[str, Any]:
        """Facts about the serving process, merged into every status answer."""
        return {
            "peer_id": self.transport.peer_id,
            "uptime": round(trio.current_time() - self._started, 3),
            "rss_kib": _rss_kib(),
        }

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Install the handler, then sweep (and log status) until cancelled."""
        self._started = trio.current_time()
        self.registry.info = self.process_info
        self.transport.set_request_handler(PROTOCOL_ID, self._handle)
        task_status.started()
        next_status = self._started + self.status_interval
        while True:
            await trio.sleep(self.sweep_interval)
            now = trio.current_time()
            self.registry.sweep(now)
            if self.status_interval > 0 and now >= next_status:
                next_status = now + self.status_interval
                st = self.registry.status(now)
                status_log.info(
                    "event=status networks=%d registrations=%d peers=%d rss_kib=%s requests=%d",
                    st["networks"],
                    st["registrations"],
                    st["peers"],
                    st["rss_kib"],
                    st["counters"].get("requests", 0),
                )


def transport_config() -> Any:
    """Libp2pConfig for a registry: small requests, short timeouts, more concurrent streams in total."""
    from p2pfl.transport.libp2p import Libp2pConfig

    return Libp2pConfig(
        max_request_bytes=MAX_REQUEST_BYTES,
        request_read_timeout=5.0,
        handler_timeout=5.0,
        max_inbound_streams_per_peer=4,
        max_inbound_streams=256,
        max_connections=512,
        # every peer's first contact: a site behind one NAT address registers all its peers here
        inbound_rate=16.0,
        inbound_burst=256.0,
        inbound_handshakes=32,
    )


async def _prune_peerstore(transport: Libp2pTransport, interval: float) -> None:
    """Forget disconnected peers: py-libp2p 0.8.1 keeps every peer that ever connected in its peerstore.

    A registry meets many short-lived identities (every peer, and every Sybil an attacker mints for the
    price of a Noise handshake), so without this its memory grows with each new peer id.
    """
    host = transport.host
    own = host.get_id()
    while True:
        await trio.sleep(interval)
        connected = set(host.get_connected_peers())
        store = host.get_peerstore()
        for pid in store.peer_ids():
            if pid != own and pid not in connected:
                with suppress(Exception):
                    store.clear_peerdata(pid)


async def serve(
    identity: Identity,
    listen: str,
    registry: Registry,
    *,
    ready: Callable[[str], None],
    sweep_interval: float = 1.0,
    status_interval: float = 0.0,
    task_status: TaskStatus[Libp2pTransport] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a registry on a libp2p host listening on ``listen`` until cancelled; ``ready(full multiaddr)``.

    The host runs gossipsub on a random private topic that no learning network shares, and rejects every
    gossip message: no model data can reach or cross the registry.
    """
    from p2pfl.transport.libp2p import Libp2pTransport

    async with Libp2pTransport.open(
        seed=identity.seed,
        network_id=f"bootstrap-{secrets.token_hex(8)}",
        listen=listen,
        config=transport_config(),
    ) as transport:
        transport.set_gossip_validator(lambda _fwd, _data: False)
        service = BootstrapService(
            transport, registry, sweep_interval=sweep_interval, status_interval=status_interval
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            nursery.start_soon(_prune_peerstore, transport, 5.0)
            addrs = transport.listen_addrs
            if not addrs:
                raise TransportError(f"registry host has no listen address for {listen}")
            ready(addrs[0])
            log.warning("event=ready addr=%s", addrs[0])
            task_status.started(transport)
