"""The rollout policy (pure): shadow, canary, promote, demote, replay, consistent canary routing."""

from __future__ import annotations

import pytest

from p2pfl.errors import ConfigError
from p2pfl.rollout import RolloutConfig, RolloutPolicy, replay, routes_to_canary
from p2pfl.rollout.policy import CANARY, DEMOTE, PROMOTE, ROLLBACK, SHADOW

GOOD = {"delta_auc": 0.02, "delta_f1": 0.01}
BAD = {"delta_auc": -0.05, "delta_f1": 0.01}


def run(
    policy: RolloutPolicy, rounds: int, deltas: dict[str, float], first: int = 1
) -> list[tuple[str, int]]:
    out = []
    for seq in range(first, first + rounds):
        events = policy.start(seq) + policy.judge(deltas)
        out += [(e.kind, e.seq) for e in events]
    return out


def test_better_candidate_is_promoted_after_shadow_then_k_canary_rounds() -> None:
    policy = RolloutPolicy(RolloutConfig(enabled=True, shadow_rounds=2, promote_after=3))
    events = run(policy, 7, GOOD)
    # v1 served; v2 candidate: 2 shadow rounds (2, 3), canary 3 rounds (4, 5, 6) -> promoted at round 6
    assert events == [(PROMOTE, 1), (SHADOW, 2), (CANARY, 2), (PROMOTE, 2), (SHADOW, 7)]
    assert policy.state.serving == 2 and policy.state.previous == (1,)


def test_worse_candidate_is_never_promoted() -> None:
    policy = RolloutPolicy(RolloutConfig(enabled=True, shadow_rounds=1, promote_after=1))
    events = run(policy, 30, BAD)
    assert [e for e in events if e[0] == PROMOTE] == [(PROMOTE, 1)]
    assert policy.state.serving == 1
    assert sum(1 for e in events if e[0] == DEMOTE) == 29


def test_a_drop_in_canary_demotes_and_traffic_goes_back() -> None:
    policy = RolloutPolicy(RolloutConfig(enabled=True, shadow_rounds=0, promote_after=3))
    run(policy, 3, GOOD)  # v1 served, v2 in canary, passed 2 rounds
    assert policy.state.phase == "canary"
    [ev] = policy.judge({"delta_f1": -0.2})
    assert ev.kind == DEMOTE and "canary traffic rolled back to serving seq 1" in ev.reason
    assert policy.state.candidate is None and policy.state.serving == 1


def test_threshold_is_inclusive_and_missing_deltas_hold() -> None:
    policy = RolloutPolicy(RolloutConfig(enabled=True, shadow_rounds=1, promote_after=1, min_delta_auc=0.01))
    policy.start(1)
    policy.start(2)
    assert policy.judge({}) == [] and policy.state.passed == 0  # nothing measurable: holds
    assert [e.kind for e in policy.judge({"delta_auc": 0.01})] == [CANARY]
    assert [e.kind for e in policy.judge({"delta_auc": float("nan")})] == [DEMOTE]


def test_replay_rebuilds_state_from_log_events() -> None:
    policy = RolloutPolicy(RolloutConfig(enabled=True, shadow_rounds=1, promote_after=1))
    events = run(policy, 5, GOOD)
    rebuilt = replay(events)
    s = policy.state
    assert (rebuilt.serving, rebuilt.previous, rebuilt.candidate, rebuilt.phase) == (
        s.serving,
        s.previous,
        s.candidate,
        s.phase,
    )
    rebuilt = replay([*events, ("version", 9), ("rollout_rollback", 1)])
    assert rebuilt.serving == 1 and rebuilt.candidate is None


def test_canary_routing_is_consistent_and_near_the_fraction() -> None:
    keys = [f"user-{i}" for i in range(4000)]
    first = [routes_to_canary(k, 0.1) for k in keys]
    assert first == [routes_to_canary(k, 0.1) for k in keys]
    assert 0.08 < sum(first) / len(keys) < 0.12
    wider = [routes_to_canary(k, 0.3) for k in keys]
    assert all(w for f, w in zip(first, wider, strict=True) if f)  # canary at 10% stays canary at 30%
    assert not any(routes_to_canary(k, 0.0) for k in keys) and all(routes_to_canary(k, 1.0) for k in keys)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"shadow_rounds": -1}, "shadow_rounds"),
        ({"promote_after": 0}, "promote_after"),
        ({"canary_fraction": 1.5}, "canary_fraction"),
        ({"min_delta_auc": float("nan")}, "min_delta_auc"),
        ({"enabled": "yes"}, "enabled"),
        ({"base_seq": 0}, "base_seq"),
    ],
)
def test_bad_config_names_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        RolloutConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.section == "rollout" and info.value.key == key


def test_the_rollout_section_of_a_peer_toml() -> None:
    from pathlib import Path

    from p2pfl.config.loader import parse_config
    from tests.config.test_schema import doc

    cfg = parse_config(doc(rollout={"enabled": True, "shadow_rounds": 2, "min_delta_auc": 0}), Path("."))
    assert cfg.peer.rollout == RolloutConfig(enabled=True, shadow_rounds=2)
    assert parse_config(doc(), Path(".")).peer.rollout == RolloutConfig()
    with pytest.raises(ConfigError, match=r"^\[rollout\] shadow: unknown key"):
        parse_config(doc(rollout={"shadow": 2}), Path("."))
    with pytest.raises(ConfigError, match=r"^\[rollout\] canary_fraction: must be in \[0, 1\]"):
        parse_config(doc(rollout={"canary_fraction": 2}), Path("."))


def test_a_promoted_version_that_drops_is_rolled_back_within_the_watch() -> None:
    policy = RolloutPolicy(RolloutConfig(enabled=True, shadow_rounds=0, promote_after=2))
    run(policy, 3, GOOD)  # v1 served, v2 promoted after 2 canary rounds
    assert policy.state.serving == 2 and policy.state.watch == 2
    assert policy.judge_serving(GOOD) == [] and policy.state.watch == 1
    [ev] = policy.judge_serving(BAD)
    assert ev.kind == ROLLBACK and ev.seq == 1 and "dropped after its promotion" in ev.reason
    assert policy.state.serving == 1 and policy.state.watch == 0
    assert policy.judge_serving(BAD) == []  # nothing watched any more
    assert replay([("rollout_promote", 1), ("rollout_promote", 2), (ROLLBACK, 1)]).serving == 1
