"""An honest peer that lags (publishes versions rounds old) is not counted towards eviction by
``evict_far_against`` (issue 16, session 24 laggard; docs/scoring.md, "nearfix", failure modes). On the
simulated clock: one result per seed. The others do not wait for the lagger (wait_fraction 0.5), so each of
its versions is about five of their rounds old."""

from __future__ import annotations

from typing import Any

import pytest

from p2pfl import peer_rounds
from p2pfl.sim import bench_lagger, protocol_attacks


def _lag(row: dict[str, Any]) -> float:
    return float(row["lag_rounds"].split("/")[0])  # the median number of observer rounds between versions


#: both round orders, each with the lag (simulated s per round) that puts the lagger 4-5 of the others'
#: rounds behind: with ``wait_before_mix`` their rounds are longer (each mix waits for its round's
#: versions), so 0.1 s made 3 rounds of lag, not the 4-5 these tests are about
ORDERS = pytest.mark.parametrize(
    ("wait_before_mix", "lag_s"), [(False, 0.1), (True, 0.15)], ids=["old-order", "same-round"]
)


@ORDERS
def test_a_founder_that_starts_lagging_stays_near_and_is_never_counted(
    wait_before_mix: bool, lag_s: float
) -> None:
    # in step for 8 rounds (a founder, established), then 5 rounds behind for the rest of the run
    row = bench_lagger.run_cell(
        "iid", "complete", 5, 1, lag_s, rounds=60, wait_fraction=0.5, from_round=8,
        run={"wait_before_mix": wait_before_mix},
    )  # fmt: skip
    assert _lag(row) >= 4 and row["young"] == 0  # it really lags, and as an established founder
    assert row["scored"] >= 4 * 12
    # the margin: no scored version far (r >= evict_distance 4) or anti-aligned (cos <= cos_bad -0.5)
    assert row["r_max_later"] < 4 and row["cos_min_later"] > -0.5
    assert row["far_anti"] == 0
    assert row["counted_max"] == 0 and row["evidence_max"] == 0.0
    assert row["evicted_by"] == 0 and row["honest_false_positive"] == 0


@ORDERS
def test_a_lagger_from_the_start_is_far_and_anti_aligned_only_in_its_first_version(
    wait_before_mix: bool, lag_s: float
) -> None:
    # slow from its first round: first heard after the founding rounds (young), its first version the
    # farthest; evict_far_against needs evict_after (4) such versions
    row = bench_lagger.run_cell(
        "iid", "complete", 5, 1, lag_s, rounds=60, wait_fraction=0.5, run={"wait_before_mix": wait_before_mix}
    )
    assert _lag(row) >= 4 and row["scored"] >= 4 * 8
    assert len(row["far_anti_rounds"]) <= 1
    # after its first version, no version far and anti-aligned (the later ones: neither)
    assert row["cos_min_far"] is None and row["r_max_anti"] is None
    assert row["counted_max"] == 0 and row["evidence_max"] == 0.0
    assert row["evicted_by"] == 0 and row["honest_false_positive"] == 0


def test_the_lagging_patch_is_undone() -> None:
    before, train = protocol_attacks.ProtocolAttack.before_round, peer_rounds.RoundLoop._train
    with bench_lagger.lagging(0.1):
        assert peer_rounds.RoundLoop._train is not train
    assert protocol_attacks.ProtocolAttack.before_round is before and peer_rounds.RoundLoop._train is train
