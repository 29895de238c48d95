"""The p2pfl bootstrap registry: helps peers of a network find each other, and holds no model data.

Run it with ``p2pfl-bootstrap --key registry.key --listen /ip4/0.0.0.0/tcp/4001`` (or ``python -m
p2pfl.bootstrap``); peers use :class:`p2pfl.discovery.BootstrapClient`. Protocol and operations:
``docs/bootstrap.md``.
"""

from .service import BootstrapService, Registry, RegistryConfig, serve

__all__ = ["BootstrapService", "Registry", "RegistryConfig", "serve"]
