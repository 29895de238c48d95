"""The gate to py-libp2p internals, for the one py-libp2p version we support.

py-libp2p is young and renames its internals between releases; the transport needs a few of them to fix what
the library gets wrong (see the package docstring). Each workaround is a named function or class, in this
module or a ``compat_*`` sibling, with the reason it exists. At import this module checks that the
installed version is one it was written for and that every private name p2pfl patches, reads or calls
exists, so an upgrade fails at once with :class:`UnsupportedLibp2pError` instead of silently at run time.
No module but the compat ones reaches into py-libp2p's private attributes (a test enforces it).

This module holds the check (the version, :data:`REQUIRED_ATTRS`, :data:`REQUIRED_INSTANCE_ATTRS`) and the
logging fix, and re-exports the workarounds, which live by what they touch: :mod:`.compat_pubsub` (hardened
pubsub, membership reads), :mod:`.compat_gossipsub` (the lean router, mesh and scores), :mod:`.compat_swarm`
(dialling, connections, wire bytes). Those modules rely on this one being imported first, so the check runs
before any override exists: the package ``__init__`` imports it before any other submodule.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from functools import partial
from typing import Final, Literal

from libp2p.abc import INetwork
from libp2p.network.connection.swarm_connection import SwarmConn
from libp2p.network.swarm import Swarm
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize, OutBoundQueueSize
from libp2p.pubsub.score import PeerScorer
from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.tools.anyio_service.trio_tasks import FunctionTask

from p2pfl.errors import TransportError

__all__ = [
    "MAX_RPC_BYTES",
    "OUTBOUND_QUEUE_SIZE",
    "REQUIRED_ATTRS",
    "REQUIRED_INSTANCE_ATTRS",
    "SUPPORTED",
    "HardenedPubsub",
    "LeanGossipSub",
    "UnsupportedLibp2pError",
    "check_instances",
    "clear_equivocation_cache",
    "connection_direction",
    "count_wire_bytes",
    "disable_auto_connector",
    "drop_stale_stream",
    "evict_negative_dial_cache",
    "gate_inbound_connections",
    "has_pubsub_stream",
    "mesh_members",
    "outbound_queue_lengths",
    "peer_scorer",
    "quiet_libp2p_logging",
    "stale_stream_peers",
    "tcp_socket_of",
    "topic_subscribers",
]

#: py-libp2p releases whose internals this module was checked against.
SUPPORTED: Final = frozenset({"0.8.1"})


class UnsupportedLibp2pError(TransportError):
    """The installed py-libp2p is not a version p2pfl supports (its internals may differ)."""

    reason = "unsupported_libp2p"


#: (class, attribute) pairs p2pfl overrides, reads or calls; checked with ``hasattr`` at import.
REQUIRED_ATTRS: Final[tuple[tuple[type, str], ...]] = (
    (Pubsub, "stream_handler"),
    (Pubsub, "push_msg"),
    (Pubsub, "notify_subscriptions"),
    (Pubsub, "_teardown_if_connected"),
    (Pubsub, "_handle_dead_peer"),
    (Pubsub, "_forget_all_subscriptions"),
    (Pubsub, "_handle_new_peer"),  # compat_pubsub: never dials
    (Pubsub, "topic_ids"),  # compat_pubsub: announce_to
    (Pubsub, "get_message_id"),
    (SwarmConn, "direction"),
    (Swarm, "_handle_inbound_connection"),  # compat_swarm: gate_inbound_connections replaces it
    (Swarm, "_build_remote_multiaddr"),
    (Swarm, "upgrade_inbound_raw_conn"),
    (GossipSub, "send_rpc"),
    (GossipSub, "_get_peers_to_send"),
    (GossipSub, "_perform_opportunistic_grafting"),
    (GossipSub, "_consider_peer_replacement"),
    (GossipSub, "_get_adaptive_gossip_peers_count"),
    (GossipSub, "_emit_idontwant_for_message"),
    (GossipSub, "publish"),
    (GossipSub, "_check_spam_protection"),
    (GossipSub, "_check_equivocation"),
    (GossipSub, "_notify_observers"),
    (PeerScorer, "penalize_behavior"),
    (PeerScorer, "score"),
    (PeerScorer, "remove_peer"),  # connections: forget an evicted peer's score
    # compat_cpu
    (TrioManager, "_find_parent_task"),
    (TrioManager, "_run_and_manage_task"),
    (FunctionTask, "is_done"),
    (FunctionTask, "has_trio_task"),
    (FunctionTask, "trio_task"),
)

#: Attributes set in ``__init__`` (not visible on the class): checked on every host built, by
#: :func:`check_instances`, as (what, attribute).
REQUIRED_INSTANCE_ATTRS: Final[tuple[tuple[Literal["network", "pubsub", "gossipsub"], str], ...]] = (
    ("network", "auto_connector"),
    ("network", "_negative_peer_cache"),
    ("network", "upgrader"),
    ("network", "_inbound_limiter"),
    ("network", "connection_gate"),
    ("pubsub", "peers"),
    ("pubsub", "peer_queues"),
    ("pubsub", "peer_topics"),
    ("gossipsub", "mesh"),
    ("gossipsub", "peer_protocol"),
    ("gossipsub", "scorer"),
    ("gossipsub", "equivocation_detection"),
    ("gossipsub", "mcache"),
    ("gossipsub", "topic_observation"),
)

#: Largest RPC gossipsub accepts (larger publishes are dropped silently).
MAX_RPC_BYTES: Final[int] = DefaultMaxMessageSize
#: RPCs queued per peer before pubsub drops new ones silently.
OUTBOUND_QUEUE_SIZE: Final[int] = OutBoundQueueSize


def _unsupported(found: str) -> UnsupportedLibp2pError:
    return UnsupportedLibp2pError(
        f"p2pfl supports py-libp2p {', '.join(sorted(SUPPORTED))}, found {found}; "
        f"pin libp2p=={max(SUPPORTED)} or upgrade p2pfl"
    )


def _check_version() -> None:
    try:
        version = importlib.metadata.version("libp2p")
    except importlib.metadata.PackageNotFoundError:
        version = "no installed distribution"
    if version not in SUPPORTED:
        raise _unsupported(version)
    missing = [f"{cls.__name__}.{name}" for cls, name in REQUIRED_ATTRS if not hasattr(cls, name)]
    if missing:
        raise _unsupported(f"{version} without {', '.join(missing)}")


_check_version()

from p2pfl.transport.libp2p import compat_cpu  # noqa: E402 - after the check: it patches what it checked

compat_cpu.install()


def check_instances(network: INetwork, pubsub: Pubsub, gossipsub: GossipSub) -> None:
    """Raise :class:`UnsupportedLibp2pError` unless the instance attributes we use exist on a built host."""
    objs: dict[str, object] = {"network": network, "pubsub": pubsub, "gossipsub": gossipsub}
    missing = [f"{what}.{name}" for what, name in REQUIRED_INSTANCE_ATTRS if not hasattr(objs[what], name)]
    if missing:
        raise _unsupported(f"{importlib.metadata.version('libp2p')} without {', '.join(missing)}")


# ------------------------------------------------------------------------------------------------ logging
def quiet_libp2p_logging() -> None:
    """Stop libp2p's WARNING spam reaching stderr without hiding it from an application's own handlers.

    Importing libp2p (without ``LIBP2P_DEBUG``) sets the ``libp2p`` logger to WARNING, ``propagate=False``
    and no handler, so its warnings go to Python's last-resort stderr handler and never to the app's
    handlers. We restore propagation and add a NullHandler; ``LIBP2P_DEBUG`` setups are left alone.
    """
    if os.environ.get("LIBP2P_DEBUG"):
        return
    root = logging.getLogger("libp2p")
    if not any(isinstance(h, logging.NullHandler) for h in root.handlers):
        root.addHandler(logging.NullHandler())
    root.propagate = True
    if root.level == logging.NOTSET or root.level < logging.WARNING:
        root.setLevel(logging.WARNING)
    # It sets INFO on itself; we disable it anyway.
    logging.getLogger("libp2p.network.auto_connector").setLevel(logging.WARNING)
    # Failed dials and stream opens are logged at ERROR *and* raised; we raise them as TransportError.
    for name, prefix in (
        ("libp2p.host.basic_host", "Failed to open stream"),
        ("libp2p.transport.tcp.tcp", "Failed to open TCP stream"),
    ):
        logging.getLogger(name).addFilter(partial(_not_prefixed, prefix))


def _not_prefixed(prefix: str, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(prefix)


quiet_libp2p_logging()

# ----------------------------------------------------------------------------------------- re-exports
# The workarounds, after the check (they subclass and patch what it checked); ``compat.X`` keeps working.
from p2pfl.transport.libp2p.compat_gossipsub import (  # noqa: E402
    LeanGossipSub,
    clear_equivocation_cache,
    mesh_members,
    peer_scorer,
)
from p2pfl.transport.libp2p.compat_pubsub import (  # noqa: E402
    HardenedPubsub,
    drop_stale_stream,
    has_pubsub_stream,
    outbound_queue_lengths,
    stale_stream_peers,
    topic_subscribers,
)
from p2pfl.transport.libp2p.compat_swarm import (  # noqa: E402
    connection_direction,
    count_wire_bytes,
    disable_auto_connector,
    evict_negative_dial_cache,
    gate_inbound_connections,
    tcp_socket_of,
)
