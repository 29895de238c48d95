"""Transports: the interface (``base``), real libp2p (``libp2p``) and in-process (``memory``).

``Libp2pTransport`` and ``Libp2pConfig`` are imported lazily: importing libp2p costs 1-2 s of CPU, which
simulations on the memory transport (and every process of a multi-process run) should not pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from p2pfl.transport.base import Transport, TransportStats
from p2pfl.transport.memory import MemoryNetwork, MemoryTransport

if TYPE_CHECKING:
    from p2pfl.transport.libp2p import Libp2pConfig, Libp2pTransport

__all__ = [
    "Libp2pConfig",
    "Libp2pTransport",
    "MemoryNetwork",
    "MemoryTransport",
    "Transport",
    "TransportStats",
]

_LAZY = {"Libp2pConfig", "Libp2pTransport"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from p2pfl.transport import libp2p

        return getattr(libp2p, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
