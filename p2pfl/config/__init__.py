"""Configuration: the typed schema of a peer's settings and the TOML loader built from it.

* :mod:`p2pfl.config.schema`: :class:`PeerConfig`, the metadata of its fields (TOML section, scenario
  section) and :func:`derive`, which builds the engine configs from it by field name.
* :mod:`p2pfl.config.loader`: a peer TOML file -> :class:`NodeConfig` (``ConfigError`` names
  ``[section] key``). See ``docs/peer.md`` for a complete, commented example.
"""

from p2pfl.config.loader import (
    LOG_LEVELS,
    NodeConfig,
    check_learner_params,
    check_multiaddr,
    load_config,
    load_entry,
    parse_config,
    read_toml,
)
from p2pfl.config.schema import PeerConfig, derive

__all__ = [
    "LOG_LEVELS",
    "NodeConfig",
    "PeerConfig",
    "check_learner_params",
    "check_multiaddr",
    "derive",
    "load_config",
    "load_entry",
    "parse_config",
    "read_toml",
]
