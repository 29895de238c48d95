"""Prometheus metrics of a peer: ``[metrics] listen = "127.0.0.1:9464"`` in the peer config, or
``Peer(..., metrics=...)`` when embedding. ``docs/operations.md`` lists the metrics, their labels and the
cardinality cap.

- :mod:`~p2pfl.metrics.listen`: the ``HOST:PORT`` address (checked where it is configured)
- :mod:`~p2pfl.metrics.snapshot`: a consistent copy of the peer's counters, taken on its trio loop
- :mod:`~p2pfl.metrics.collector`: metric families built from a snapshot at scrape time, capped labels
- :mod:`~p2pfl.metrics.peer_metrics`: :class:`PeerMetrics`: the registry, direct observations, the endpoint

``prometheus_client`` is imported only when a peer has metrics on (this package is imported lazily).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from p2pfl.metrics.listen import parse_listen

if TYPE_CHECKING:
    from p2pfl.metrics.collector import BYTE_KINDS, NEIGHBOUR_LABEL_CAP, NEIGHBOUR_STATES, SnapshotCollector
    from p2pfl.metrics.peer_metrics import PeerMetrics
    from p2pfl.metrics.snapshot import Snapshot, take_snapshot

_LAZY = {
    "BYTE_KINDS": "p2pfl.metrics.collector",
    "NEIGHBOUR_LABEL_CAP": "p2pfl.metrics.collector",
    "NEIGHBOUR_STATES": "p2pfl.metrics.collector",
    "SnapshotCollector": "p2pfl.metrics.collector",
    "PeerMetrics": "p2pfl.metrics.peer_metrics",
    "Snapshot": "p2pfl.metrics.snapshot",
    "take_snapshot": "p2pfl.metrics.snapshot",
}

__all__ = [
    "BYTE_KINDS",
    "NEIGHBOUR_LABEL_CAP",
    "NEIGHBOUR_STATES",
    "PeerMetrics",
    "Snapshot",
    "SnapshotCollector",
    "parse_listen",
    "take_snapshot",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'p2pfl.metrics' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
