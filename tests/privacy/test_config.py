"""``[privacy]``: every bad value is a ConfigError naming the key, from the dataclass, the TOML loader and
the peer (a learner without DP-SGD)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from p2pfl.config import PeerConfig
from p2pfl.config.loader import parse_config
from p2pfl.errors import ConfigError
from p2pfl.peer import Peer
from p2pfl.privacy import PrivacyConfig
from p2pfl.transport.memory import MemoryNetwork

BASE: dict[str, Any] = {
    "peer": {"network_id": "x", "key_file": "k"},
    "learner": {"entry": "p2pfl.sim.entry:digits"},
    "access": {"open": True},
}


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        ({"mode": "recrd"}, "mode", "must be one of off, record, peer"),
        ({"mode": "record"}, "epsilon", "required"),
        ({"mode": "record", "epsilon": 3.0}, "rounds", "required to calibrate"),
        ({"mode": "peer", "epsilon": 0}, "epsilon", "must be a number in (0, 50.0]"),
        ({"mode": "peer", "epsilon": 51}, "epsilon", "must be a number"),
        ({"mode": "peer", "epsilon": "3"}, "epsilon", "must be a number"),
        ({"mode": "peer", "epsilon": float("nan"), "rounds": 3}, "epsilon", "must be a number"),
        ({"mode": "peer", "epsilon": 3, "rounds": 0}, "rounds", "1..10000000"),
        ({"mode": "peer", "epsilon": 3, "rounds": True}, "rounds", "integer"),
        ({"mode": "peer", "epsilon": 3, "rounds": 5, "delta": 0}, "delta", "(0, 1)"),
        ({"mode": "peer", "epsilon": 3, "rounds": 5, "delta": 0.01}, "delta", "at most 1e-3"),
        ({"mode": "peer", "noise_multiplier": 0.0}, "noise_multiplier", "must be a number in"),
        ({"mode": "peer", "noise_multiplier": True}, "noise_multiplier", "must be a number in"),
        ({"mode": "peer", "noise_multiplier": 1.0, "clip_norm": -1}, "clip_norm", "positive"),
        ({"mode": "peer", "noise_multiplier": 1.0, "clip_norm": float("inf")}, "clip_norm", "positive"),
        ({"mode": "peer", "noise_multiplier": 1.0, "accountant": "moments"}, "accountant", "rdp, pld"),
    ],
)
def test_a_bad_privacy_value_is_a_config_error_naming_its_key(
    table: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        PrivacyConfig(**table)
    assert (exc.value.section, exc.value.key) == ("privacy", key)
    assert reason in str(exc.value)
    with pytest.raises(ConfigError, match=rf"\[privacy\] {key}"):
        parse_config({**BASE, "privacy": table}, Path("."))


def test_the_loader_reads_privacy_and_refuses_unknown_keys() -> None:
    table = {"mode": "record", "epsilon": 3, "delta": 1e-5, "rounds": 50, "clip_norm": 1.0}
    cfg = parse_config({**BASE, "privacy": table}, Path("."))
    assert cfg.peer.privacy == PrivacyConfig(mode="record", epsilon=3, rounds=50)
    assert parse_config(BASE, Path(".")).peer.privacy.mode == "off"  # the library default: off
    with pytest.raises(ConfigError, match=r"\[privacy\] sigma: unknown key"):
        parse_config({**BASE, "privacy": {"sigma": 1.0}}, Path("."))
    with pytest.raises(ConfigError, match=r"\[privacy\]: must be a table"):
        parse_config({**BASE, "privacy": 3}, Path("."))


class NoDPLearner:
    def get_params(self) -> dict[str, np.ndarray]:
        return {"w": np.zeros(2, np.float32)}


def test_record_level_needs_a_learner_with_dp_sgd() -> None:
    config = PeerConfig(
        network_id="x", privacy=PrivacyConfig(mode="record", epsilon=3.0, noise_multiplier=1.0)
    )
    net = MemoryNetwork()
    with pytest.raises(ConfigError, match=r"\[privacy\] mode: 'record' needs a learner with DP-SGD"):
        Peer(config, NoDPLearner(), transport=lambda i: net.open(network_id="x", seed=i.seed))  # type: ignore[arg-type]
