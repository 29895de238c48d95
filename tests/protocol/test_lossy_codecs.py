"""The engine with the lossy delta codecs: replicas stay bit-exact in sync, and the engine's delta against
its public model is error feedback (what a codec drops is sent in a later round, never lost)."""

from __future__ import annotations

import numpy as np
import pytest

from p2pfl.protocol import GossipEngine
from p2pfl.wire import payload_size
from tests.protocol.test_engine import Net, engine


@pytest.mark.parametrize("codec", ["int8", "topk:0.1", "topk:0.3"])
def test_lossy_codecs_keep_replicas_exactly_in_sync(codec: str) -> None:
    a, b = engine(1, codec=codec), engine(2)
    net = Net([a, b])
    rng = np.random.default_rng(0)
    for r in range(1, 6):
        trained = {
            k: v + rng.standard_normal(v.shape).astype(np.float32) * 0.1 for k, v in a.own_params().items()
        }
        net.run(a, a.finish_round(trained, r).actions)
        assert a.public_digest == b.replicas[a.peer_id].digest
    assert 0 == sum(b.rejections.values())


@pytest.mark.parametrize("codec", ["int8", "topk:0.1"])
def test_the_public_model_catches_up_with_the_own_model(codec: str) -> None:
    """Error feedback: once training stops, each further publish sends the residual ``own - public``; the
    receivers' view converges to the sender's model (top-k: all values, after ~1/density rounds)."""
    a, b = engine(1, codec=codec), engine(2)
    net = Net([a, b])
    rng = np.random.default_rng(1)
    target = {k: v + rng.standard_normal(v.shape).astype(np.float32) for k, v in a.own_params().items()}
    net.run(a, a.finish_round(target, 1).actions)
    first = float(np.abs(a.own - a.public).max())
    assert first > 0.001  # the codec dropped something
    for r in range(2, 14):
        net.run(a, a.finish_round(a.own_params(), r).actions)
    last = float(np.abs(a.own - b.replicas[a.peer_id].vec).max())
    assert last < first / 50
    assert a.public_digest == b.replicas[a.peer_id].digest


def test_lossy_payloads_are_smaller() -> None:
    like = {"w": np.zeros((64, 32), np.float32), "b": np.zeros(32, np.float32)}
    raw = payload_size("raw", like)
    assert payload_size("int8", like) < raw / 2 and payload_size("topk:0.1", like) < raw / 3


def test_a_first_delta_from_the_common_initial_model_needs_no_snapshot() -> None:
    """Every peer of a network starts from the same model: a neighbour's version 0 is known, so its first
    delta applies at once (no snapshot fetch). A peer that started elsewhere still asks for a snapshot."""
    a, b = engine(1), engine(2)
    other = engine(3)
    other.set_own({k: v + 1 for k, v in other.own_params().items()})
    other_start = GossipEngine(
        other.identity, other.config, other.own_params(), aggregation=a.aggregation, scoring_enabled=False
    )
    net = Net([a, b, other_start])
    trained = {k: v + 0.5 for k, v in a.own_params().items()}
    net.run(a, a.finish_round(trained, 1).actions)
    assert b.snapshot_requests == 0
    assert b.replicas[a.peer_id].digest == a.public_digest and b.replicas[a.peer_id].seq == 1
    assert other_start.snapshot_requests == 1  # its version 0 is not a's
    assert other_start.replicas[a.peer_id].digest == a.public_digest  # via the snapshot
