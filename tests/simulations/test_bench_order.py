"""simulations/bench_order.py: the committed command behind docs/scoring.md's order17s / order17r tables.

The 5-peer scenario's marginal seed (4) in the same-round order: its sign-flipper's founding versions cost
an observer 2.5-2.8x the loss reference, above ``evict_far_against_loss`` (2) and under nearfix's bar (3).
"""

from __future__ import annotations

import json

import pytest

from p2pfl.sim import bench_order


def _rows(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    assert bench_order.main(list(argv)) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_the_marginal_seed_is_evicted_by_all_by_round_5_and_not_at_nearfix_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (row,) = _rows(capsys, "report5", "--seeds", "4", "--order", "same")
    assert row["wait_before_mix"] is True and row["pairs"] == [4, 4] and row["false"] == 0
    assert row["last_eviction_round"] is not None and int(str(row["last_eviction_round"])) <= 5
    bar = "scoring.evict_far_against_loss=3.0"
    (old,) = _rows(capsys, "report5", "--seeds", "4", "--order", "same", "--set", bar)
    assert old["pairs"] == [3, 4] and old["set"] == [bar]
