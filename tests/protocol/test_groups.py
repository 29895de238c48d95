"""GossipEngine.set_groups: an organisation's share of any mix is capped, the excess goes to the own row."""

from __future__ import annotations

import math

import numpy as np
import pytest

from p2pfl.aggregation import AggregationConfig
from p2pfl.errors import ConfigError
from p2pfl.identity import Identity
from p2pfl.protocol import GossipEngine, ProtocolConfig, Publish
from p2pfl.scoring import ScoringConfig
from tests.protocol.test_engine import Net, model


def _engines(n: int, scoring: bool) -> list[GossipEngine]:
    return [
        GossipEngine(
            Identity(bytes([i]) * 32),
            ProtocolConfig(network_id="t"),
            model(),
            aggregation=AggregationConfig(rule="mean", nnm=False, self_clip_scale=None),
            scoring=ScoringConfig(),
            scoring_enabled=scoring,
        )
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize("scoring", [True, False])
def test_a_groups_share_of_the_mix_is_capped_and_the_rest_goes_to_the_own_model(scoring: bool) -> None:
    """Peer 1 mixes with four neighbours, three of one organisation at +3 and one other at +1 (a plain mean,
    so shares are exact). With the organisation capped at 25% of any mix, the three together weigh what one
    quarter of the total allows and the mix moves accordingly."""
    engines = _engines(5, scoring)
    net = Net(engines)
    net.now = 1.0
    targets = [1.0, 1.0, 3.0, 3.0, 3.0]
    for e, t in zip(engines[1:], targets[1:], strict=True):
        net.run(e, [a for a in e.finish_round(model(t), net.now).actions if isinstance(a, Publish)])
    first = engines[0]
    org = {e.peer_id: "acme" for e in engines[2:]}
    first.set_groups(org, {"acme": 0.25})
    out = first.finish_round(model(1.0), net.now)
    total = out.own_weight + sum(c.weight for c in out.contributions)
    acme = sum(c.weight for c in out.contributions if c.peer in org)
    assert math.isclose(total, 5.0) and math.isclose(acme / total, 0.25)
    assert math.isclose(out.own_weight, 1.0 + 3.0 - 1.25)
    # the mix: 0.25 of the weight at 3, the rest at 1
    assert np.allclose(first.own, 0.25 * 3.0 + 0.75 * 1.0)


def test_without_groups_the_mix_is_unchanged_and_bad_caps_are_refused() -> None:
    engines = _engines(3, True)
    net = Net(engines)
    net.now = 1.0
    for e in engines[1:]:
        net.run(e, [a for a in e.finish_round(model(2.0), net.now).actions if isinstance(a, Publish)])
    first = engines[0]
    first.set_groups({engines[1].peer_id: "acme"}, {})  # a group without a cap is not limited
    out = first.finish_round(model(2.0), net.now)
    assert out.own_weight == 1.0 and [c.weight for c in out.contributions] == [1.0, 1.0]
    with pytest.raises(ConfigError):
        first.set_groups({}, {"acme": 1.5})
