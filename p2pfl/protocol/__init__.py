"""The sans-I/O gossip-learning engine and its vocabulary (see :mod:`p2pfl.protocol.engine`).

Modules: ``layout`` (model <-> flat vector), ``actions`` (decisions and faults), ``config``
(ProtocolConfig), ``replicas`` (replicas and round outcomes), ``bans`` (evictions that expire), ``engine``
(GossipEngine, composed of ``core`` (state), ``receive`` (what arrives, over its bases ``snapshots`` and
``proofs``) and ``rounds`` (publish, mix, score)), and the pure policies a peer applies: ``guards`` (what a
round keeps), ``pacing`` (when to start). The engine's names are re-exported here:
``from p2pfl.protocol import X``.
"""

from p2pfl.protocol.actions import (
    DELTA_PROTOCOL,
    INTERNAL_ERROR,
    SNAPSHOT_PROTOCOL,
    Action,
    Evict,
    Fault,
    FetchPayload,
    Forget,
    Publish,
    PublishProof,
    Readmit,
    RequestSnapshot,
    Start,
    Wait,
)
from p2pfl.protocol.bans import BanBook
from p2pfl.protocol.config import _MAX_BAN_S, ProtocolConfig
from p2pfl.protocol.engine import PENDING_PER_PEER, GossipEngine
from p2pfl.protocol.layout import FloatVec, Layout, Params
from p2pfl.protocol.replicas import Contribution, EvalJob, Replica, RoundOutcome, ValLossCache

__all__ = [
    "DELTA_PROTOCOL",
    "INTERNAL_ERROR",
    "PENDING_PER_PEER",
    "SNAPSHOT_PROTOCOL",
    "_MAX_BAN_S",
    "Action",
    "BanBook",
    "Contribution",
    "EvalJob",
    "Evict",
    "Fault",
    "FetchPayload",
    "FloatVec",
    "Forget",
    "GossipEngine",
    "Layout",
    "Params",
    "ProtocolConfig",
    "Publish",
    "PublishProof",
    "Readmit",
    "Replica",
    "RequestSnapshot",
    "RoundOutcome",
    "Start",
    "ValLossCache",
    "Wait",
]
