"""Copies weigh once in the mix (issue 16, mimic; ``ScoringConfig.copies_mix_once``, p2pfl/scoring/copies.py):
three neighbours publishing one model are one row's worth of the mix, not three."""

from __future__ import annotations

import numpy as np
import pytest

from p2pfl.aggregation import AggregationConfig
from p2pfl.identity import Identity
from p2pfl.protocol import GossipEngine, ProtocolConfig, Publish
from p2pfl.scoring import ScoringConfig
from tests.protocol.test_engine import Net, model


def _mix(scoring: ScoringConfig) -> tuple[GossipEngine, list[float], float]:
    """Peer 1 trains to 1 and mixes (plain mean) one neighbour at 1 and three that publish the same model, 2:
    returns the engine, the neighbours' weights and the own weight."""
    engines = [
        GossipEngine(
            Identity(bytes([i]) * 32),
            ProtocolConfig(network_id="t"),
            model(),
            aggregation=AggregationConfig(rule="mean", nnm=False, self_clip_scale=None),
            scoring=scoring,
        )
        for i in range(1, 6)
    ]
    net = Net(engines)
    net.now = 1.0
    for e, t in zip(engines[1:], [1.0, 2.0, 2.0, 2.0], strict=True):
        net.run(e, [a for a in e.finish_round(model(t), net.now).actions if isinstance(a, Publish)])
    first = engines[0]
    out = first.finish_round(model(1.0), net.now)
    return first, [c.weight for c in out.contributions], out.own_weight


@pytest.mark.parametrize("once", [True, False])
def test_three_copies_weigh_as_one_neighbour(once: bool) -> None:
    """With ``copies_mix_once`` the three copies share one weight (1/3 each) and the mean is (1 + 1 + 2) / 3;
    without it each weighs 1 and the copies hold 3/5 of the mix."""
    first, weights, own = _mix(ScoringConfig(copies_mix_once=once))
    assert own == 1.0 and len(weights) == 4
    if once:
        assert np.allclose(sorted(weights), [1 / 3, 1 / 3, 1 / 3, 1.0])
        assert np.allclose(first.own, (1.0 + 1.0 + 2.0) / 3.0)
    else:
        assert weights == [1.0] * 4
        assert np.allclose(first.own, (1.0 + 1.0 + 3 * 2.0) / 5.0)
