"""p2pfl: peer-to-peer gossip learning over libp2p.

The supported public names are listed in ``__all__``; everything else is importable but internal.
"""

from p2pfl.errors import (
    AggregationError,
    ConfigError,
    IdentityError,
    P2PFLError,
    StateError,
    TransportError,
)
from p2pfl.identity import Identity, load_key, save_key
from p2pfl.wire import WireError

__version__ = "0.1.0"

__all__ = [
    "AggregationError",
    "ConfigError",
    "Identity",
    "IdentityError",
    "P2PFLError",
    "StateError",
    "TransportError",
    "WireError",
    "__version__",
    "load_key",
    "save_key",
]
