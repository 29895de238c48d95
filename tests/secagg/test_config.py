"""``[secagg]`` in a peer config: parsed into SecAggConfig, bad values refused naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from p2pfl.config.loader import parse_config
from p2pfl.errors import ConfigError

from .harness import identities

IDS = [i.peer_id for i in identities(8)]


def _config(secagg: dict[str, Any]) -> Any:
    data = {
        "peer": {"network_id": "n", "key_file": "k"},
        "learner": {"entry": "a:b"},
        "access": {"open": True},
        "secagg": secagg,
    }
    return parse_config(data, Path("."))


def test_a_group_parses_with_a_majority_threshold_by_default() -> None:
    cfg = _config({"enabled": True, "members": IDS}).peer.secagg
    assert cfg.members == tuple(sorted(IDS)) and cfg.group_threshold == 5
    spec = cfg.spec("n", 10)
    assert spec.threshold == 5 and spec.fixed.max_error() == 2.0**-21 + 16 * 2.0**-24


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"enabled": True, "members": IDS, "threshold": 4}, "threshold"),
        ({"enabled": True, "members": IDS, "threshold": 9}, "threshold"),
        ({"enabled": True, "members": [*IDS, "not-a-peer-id"]}, "members"),
        ({"enabled": True, "members": IDS, "bound": 1e6}, "bound"),
        ({"enabled": True, "members": IDS, "phase_timeout_s": 0}, "phase_timeout_s"),
        ({"enabled": "yes"}, "enabled"),
        ({"members": "x"}, "members"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_secagg_values_are_refused_naming_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(table)
    assert "[secagg]" in str(info.value) and key in str(info.value)


def test_a_peer_node_refuses_an_enabled_group_it_cannot_run() -> None:
    """Over libp2p there is no group channel: `p2pfl peer` refuses `[secagg] enabled = true` instead of
    silently publishing the peer's own model."""
    import trio

    from p2pfl.node import serve

    node = _config({"enabled": True, "members": IDS})
    with pytest.raises(ConfigError) as info:
        trio.run(serve, node)
    assert info.value.section == "secagg" and info.value.key == "enabled"
