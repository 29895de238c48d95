"""The libp2p host: identity, construction (Noise + Yamux only), lifecycle; :class:`Libp2pTransport`."""

from __future__ import annotations

import logging
import socket
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from p2pfl.errors import TransportError
from p2pfl.transport.base import GossipHandler, GossipValidator, RequestHandler, TransportStats
from p2pfl.transport.inbound import InboundGate
from p2pfl.transport.libp2p import compat
from p2pfl.transport.libp2p.compat_frames import WholeFrameYamux, use_yamux
from p2pfl.transport.libp2p.compat_noise import BatchedNoiseTransport
from p2pfl.transport.libp2p.compat_yamux import FastYamux
from p2pfl.transport.libp2p.config import Libp2pConfig
from p2pfl.transport.libp2p.connections import ConnectionsMixin, _FilterNotifee
from p2pfl.transport.libp2p.gossip import GossipMixin, gossip_topic, make_gossipsub
from p2pfl.transport.libp2p.streams import StreamsMixin, cleanup_scope, reset_quietly

log = logging.getLogger("p2pfl.transport.libp2p")


def _check_port_free(addr: multiaddr.Multiaddr) -> None:
    """Refuse a fixed TCP port that is already taken.

    py-libp2p listens with SO_REUSEPORT, so a second process "listens" on a busy port without error and the
    kernel then splits inbound connections between the two. A plain bind (SO_REUSEADDR only) fails then.
    """
    names = {p.name for p in addr.protocols()}
    if "tcp" not in names:
        return
    port = int(addr.value_for_protocol("tcp") or 0)
    if port == 0:
        return
    family, host = (
        (socket.AF_INET6, addr.value_for_protocol("ip6")) if "ip6" in names else (socket.AF_INET, None)
    )
    if host is None:
        host = addr.value_for_protocol("ip4") if "ip4" in names else "0.0.0.0"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((str(host), port))
    except OSError as exc:
        raise TransportError(f"cannot listen on {addr}: {exc.strerror or exc}") from exc


def check_listen_port(listen: str) -> None:
    """Refuse a ``listen`` multiaddr whose fixed TCP port is taken (``TransportError`` caused by the
    ``OSError``), so a command can fail before it writes anything; the same check runs when a host opens."""
    _check_port_free(multiaddr.Multiaddr(listen))


def _build_host(key_pair: KeyPair, listen: multiaddr.Multiaddr, cfg: Libp2pConfig) -> IHost:
    """A host offering only Noise and Yamux (``new_host`` also offers TLS, SECIO, plaintext and Mplex)."""
    conn_cfg = ConnectionConfig(
        max_connections_per_peer=1,  # also removes the 250 ms happy-eyeballs wait
        max_connections=cfg.max_connections,
        high_watermark=cfg.max_connections,
        low_watermark=0,
        min_connections=0,
        dial_timeout=cfg.dial_timeout,
        outbound_stream_protocol_negotiation_timeout=cfg.stream_negotiation_timeout,
        inbound_stream_protocol_negotiation_timeout=cfg.stream_negotiation_timeout,
    )
    noise = BatchedNoiseTransport if cfg.fast_streams else NoiseTransport
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=[listen],
        enable_mDNS=False,
        connection_config=conn_cfg,
    )
    # py-libp2p's own yamux lets a cancelled writer cut a frame in half (see compat_frames): never run it
    use_yamux(host.get_network(), FastYamux if cfg.fast_streams else WholeFrameYamux)
    return host


class Libp2pTransport(GossipMixin, StreamsMixin, ConnectionsMixin):
    """:class:`~p2pfl.transport.base.Transport` over py-libp2p: Noise, Yamux, TCP, gossipsub, request streams.

    Create it with :meth:`open` (an async context manager); the host listens while the block runs and is
    closed on exit. All methods must be called on the trio loop that opened it.

    Counters (``stats``): ``messages_*``/gossip bytes count accepted gossip; request and response bodies are
    added to ``bytes_*``; ``requests_served`` counts inbound requests answered OK and ``requests_failed``
    inbound requests answered with an error frame or cut off plus outbound requests that raised.
    """

    def __init__(
        self,
        *,
        seed: bytes,
        network_id: str,
        listen: str = "/ip4/127.0.0.1/tcp/0",
        config: Libp2pConfig | None,
    ) -> None:
        """Build (but do not start) the host; prefer :meth:`open`."""
        if len(seed) != 32:
            raise TransportError("seed must be exactly 32 bytes (an Ed25519 seed)")
        if not network_id or "/" in network_id:
            raise TransportError("network_id must be non-empty and contain no '/'")
        self._config = cfg = config or Libp2pConfig()
        cfg.validate()
        try:
            self._listen = multiaddr.Multiaddr(listen)
        except Exception as exc:
            raise TransportError(f"invalid listen multiaddr {listen!r}: {exc}") from exc
        key_pair = create_new_key_pair(seed)
        self._id = ID.from_pubkey(key_pair.public_key)
        self._peer_id = str(self._id)
        self._network_id = network_id
        self._topic = gossip_topic(network_id, self._peer_id)
        self._topics = {}
        self._muted = frozenset()
        self._gone_since = {}
        self._topics_changed = trio.Event()
        self._stats = TransportStats()

        self._host = _build_host(key_pair, self._listen, cfg)
        network = self._host.get_network()
        compat.disable_auto_connector(network)
        compat.count_wire_bytes(network, self._stats)
        compat.gate_inbound_connections(network, InboundGate(cfg.inbound_limits()), self._stats.drop)
        network.register_notifee(_FilterNotifee(self))
        self._gossipsub = make_gossipsub(cfg, self._stats)
        self._pubsub = compat.HardenedPubsub(
            self._host,
            self._gossipsub,
            strict_signing=True,
            # A cached verdict would skip our validator, which records the forwarder: validate every time.
            validation_cache_ttl=0,
            validation_cache_size=1,
        )
        self._pubsub.bind(
            allow=self._peer_allowed,
            drop=self._stats.drop,
            on_accepted=self._on_accepted,
            reset_stream=partial(reset_quietly, seconds=cfg.cleanup_s),
            admit=self._admit,
        )
        compat.check_instances(network, self._pubsub, self._gossipsub)
        self._scorer = compat.peer_scorer(self._gossipsub)

        self._gossip_handler: GossipHandler | None = None
        self._validator: GossipValidator | None = None
        self._gate = None
        self._validate_from = None
        self._origin_names = {}
        self._peer_filter = None
        self._link_filter = None
        self._blocked = set()
        self._inflight = {}
        self._next_token = 0
        self._handlers: dict[str, RequestHandler] = {}
        self._forwarders = OrderedDict()
        self._inbound = {}
        self._inbound_total = 0
        self._publish_lock = trio.Lock()
        self._next_publish = 0.0
        self._conn_born = weakref.WeakKeyDictionary[INetConn, float]()
        self._conn_overlap = weakref.WeakKeyDictionary[INetConn, weakref.WeakSet[INetConn]]()
        self._resyncing = set()
        self._redial_expected = {}
        self._running = False
        self._nursery = None
        self._deliver_send, self._deliver_recv = trio.open_memory_channel[tuple[str, bytes]](
            cfg.gossip_backlog
        )

    # ----------------------------------------------------------------------------------------- lifecycle
    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        *,
        seed: bytes,
        network_id: str,
        listen: str = "/ip4/127.0.0.1/tcp/0",
        config: Libp2pConfig | None = None,
    ) -> AsyncIterator[Libp2pTransport]:
        """Start a host listening on ``listen``, joined to the network's topic; close everything on exit."""
        t = cls(seed=seed, network_id=network_id, listen=listen, config=config)
        try:
            async with t._run():
                yield t
        except BaseExceptionGroup as group:
            # libp2p's services and our tasks run in nurseries, which wrap everything in groups; give the
            # caller back their own exception (or ours) when it is the only one.
            leaf: BaseException = group
            while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
                leaf = leaf.exceptions[0]
            if leaf is group or isinstance(leaf, BaseExceptionGroup):
                raise
            raise leaf from None

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        _check_port_free(self._listen)
        try:
            async with (
                self._host.run([self._listen]),
                background_trio_service(self._pubsub),
                background_trio_service(self._gossipsub),
            ):
                if not self._host.get_transport_addrs():
                    # Swarm.listen reports failure by return value only; host.run ignores it.
                    raise TransportError(f"cannot listen on {self._listen}")
                await self._pubsub.wait_until_ready()
                # Subscribed to our own topic too: then every subscriber is in our mesh for it (up to the
                # mesh's high degree) and a publish reaches each connected peer directly.
                self._pubsub.set_topic_validator(self._topic, partial(self._validate, self._id), False)
                await self._pubsub.subscribe(self._topic)
                try:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        nursery.start_soon(self._deliver_loop)
                        nursery.start_soon(self._maintenance_loop)
                        nursery.start_soon(self._topic_loop)
                        self._running = True
                        try:
                            yield
                        finally:
                            self._running = False
                            nursery.cancel_scope.cancel()
                finally:
                    await self._close_connections()
        except OSError as exc:
            raise TransportError(f"cannot listen on {self._listen}: {exc}") from exc
        finally:
            self._running = False
            self._nursery = None
            with cleanup_scope(4 * self._config.cleanup_s):
                # Leaving host.run() does not close the host: listener and connections would survive.
                try:
                    await self._host.close()
                except Exception as exc:
                    log.debug("host close: %s", exc)

    async def _close_connections(self) -> None:
        """Close every connection at once, while pubsub still runs, before the host is closed.

        ``Swarm.close`` closes connections one after another and each yamux close ends with a 0.1 s sleep:
        15 connections took 1.5 s on an idle machine and over 10 s with 16 peer processes stopping together
        on 2 cores. Closing them concurrently first also means no remote stream arrives at a pubsub or
        handler that has already stopped. Bounded by ``cleanup_s`` and shielded (it runs on cancellation)."""
        conns = list(self._host.get_network().get_connections())
        if not conns:
            return

        async def close(conn: INetConn) -> None:
            try:
                await conn.close()
            except Exception as exc:  # already closing, or its socket is gone: nothing left to do
                log.debug("closing a connection at shutdown: %s: %s", type(exc).__name__, exc)

        with cleanup_scope(self._config.cleanup_s):
            async with trio.open_nursery() as nursery:
                for conn in conns:
                    nursery.start_soon(close, conn)

    # ------------------------------------------------------------------------------------------ identity
    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def listen_addrs(self) -> list[str]:
        return [str(a) for a in self._host.get_addrs()]

    @property
    def stats(self) -> TransportStats:
        return self._stats

    @property
    def config(self) -> Libp2pConfig:
        """The tunables this host was opened with."""
        return self._config

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def host(self) -> IHost:
        """The underlying py-libp2p host, for diagnostics and tests (register protocols via this class)."""
        return self._host
