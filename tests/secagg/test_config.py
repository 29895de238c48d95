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


@pytest.mark.parametrize("key", ["missing", "outsider"])
def test_a_peer_node_refuses_a_group_it_is_not_a_member_of(tmp_path: Path, key: str) -> None:
    """`p2pfl peer` runs an enabled group (docs/secagg.md) but refuses one that does not list its own peer
    id (or whose key does not exist yet: a new key cannot be listed), before it writes anything."""
    import trio

    from p2pfl.identity import Identity, save_key
    from p2pfl.node import serve

    if key == "outsider":
        save_key(Identity(b"\x09" * 32), tmp_path / "k")
    node = parse_config(
        {
            "peer": {"network_id": "n", "key_file": "k", "state_dir": "state"},
            "learner": {"entry": "a:b"},
            "access": {"open": True},
            "secagg": {"enabled": True, "members": IDS},
        },
        tmp_path,
    )
    with pytest.raises(ConfigError) as info:
        trio.run(serve, node)
    assert info.value.section == "secagg" and info.value.key == "members"
    assert not (tmp_path / "state").exists()
    assert (tmp_path / "k").exists() == (key == "outsider")
