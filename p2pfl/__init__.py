"""p2pfl: peer-to-peer gossip learning over libp2p.

The supported public names are listed in ``__all__``; everything else is importable but internal. Embedding
a peer in an application is described in ``docs/embedding.md``; running one as a service in ``docs/peer.md``.

``import p2pfl`` stays cheap: it imports neither torch nor libp2p (nor trio). The errors, the identity and the
wire error are imported eagerly; every other public name is resolved on first access through a module-level
``__getattr__`` (``p2pfl.Peer`` imports ``p2pfl.peer``, and so on). :class:`TorchLearner` imports torch only
when one is constructed, and the libp2p transport imports libp2p only when a peer goes online over it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from p2pfl.aggregation import AggregationConfig
    from p2pfl.discovery import DiscoveryError
    from p2pfl.learner import (
        Dataset,
        EvalResult,
        Learner,
        NumpySoftmaxLearner,
        TrainResult,
    )
    from p2pfl.learner_torch import TorchLearner
    from p2pfl.peer import Peer, PeerConfig, PeerHandle, RoundReport
    from p2pfl.scoring import ScoringConfig
    from p2pfl.transport.memory import MemoryNetwork

__version__ = "0.1.0"

__all__ = [
    "AggregationConfig",
    "AggregationError",
    "ConfigError",
    "Dataset",
    "DiscoveryError",
    "EvalResult",
    "Identity",
    "IdentityError",
    "Learner",
    "MemoryNetwork",
    "NumpySoftmaxLearner",
    "P2PFLError",
    "Peer",
    "PeerConfig",
    "PeerHandle",
    "RoundReport",
    "ScoringConfig",
    "StateError",
    "TorchLearner",
    "TrainResult",
    "TransportError",
    "WireError",
    "__version__",
    "load_key",
    "save_key",
]

#: Public names resolved on first access: name -> defining module.
_LAZY: dict[str, str] = {
    "AggregationConfig": "p2pfl.aggregation",
    "Dataset": "p2pfl.learner",
    "DiscoveryError": "p2pfl.discovery",
    "EvalResult": "p2pfl.learner",
    "Learner": "p2pfl.learner",
    "MemoryNetwork": "p2pfl.transport.memory",
    "NumpySoftmaxLearner": "p2pfl.learner",
    "Peer": "p2pfl.peer",
    "PeerConfig": "p2pfl.peer",
    "PeerHandle": "p2pfl.peer",
    "RoundReport": "p2pfl.peer",
    "ScoringConfig": "p2pfl.scoring",
    "TorchLearner": "p2pfl.learner_torch",
    "TrainResult": "p2pfl.learner",
}


# Hidden from type checkers: they see the imports above, and flag a misspelt name rather than typing it Any.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later look-ups skip this function
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
