"""The pure policy of several mixing steps per round (p2pfl.protocol.mixing)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pfl.config.schema import PeerConfig
from p2pfl.errors import ConfigError
from p2pfl.protocol.mixing import MAX_MIX_STEPS, MixConfig, MixLedger, shut_out, step_due


@pytest.mark.parametrize("bad", [0, -1, MAX_MIX_STEPS + 1, 2.0, True, "2", None])
def test_mix_steps_outside_its_range_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError) as exc:
        MixConfig(bad)  # type: ignore[arg-type]
    assert (exc.value.section, exc.value.key) == ("peer", "mix_steps")
    with pytest.raises(ConfigError):
        PeerConfig(network_id="t", mix_steps=bad)  # type: ignore[arg-type]


def test_the_default_is_one_mix_per_round() -> None:
    assert PeerConfig(network_id="t").mix_steps == 1 == MixConfig().mix_steps


def test_the_ledger_counts_only_versions_newer_than_the_last_mix_took() -> None:
    ledger = MixLedger()
    assert ledger.fresh({"a": 1, "b": 2}) == 2  # nothing mixed yet
    ledger.record([("a", 1), ("b", 2)])
    assert ledger.fresh({"a": 1, "b": 2}) == 0
    assert ledger.fresh({"a": 2, "b": 2, "c": 1}) == 2  # a newer, c new
    assert ledger.fresh({"a": 0}) == 0  # an older version (a replica reset) is nothing new


@given(st.integers(-3, 12), st.integers(1, MAX_MIX_STEPS), st.integers(0, 5), st.booleans(), st.booleans())
def test_a_step_runs_only_within_the_round_with_something_new(
    step: int, k: int, fresh: int, stopped: bool, private: bool
) -> None:
    due = step_due(step, MixConfig(k), fresh, stopped=stopped, private=private)
    assert due == (2 <= step <= k and fresh > 0 and not stopped and not private)


def test_peers_given_no_weight_are_shut_out_of_the_round_s_later_steps() -> None:
    assert shut_out([("a", 0.0), ("b", 0.4), ("c", 1.0), ("d", -0.0)]) == {"a", "d"}
    assert shut_out([]) == set()
