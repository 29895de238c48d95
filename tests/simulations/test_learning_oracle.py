"""The learning oracle's ``--pipeline`` hook (dumbbell16): the library's aggregation pipeline in the
no-protocol harness, configured from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from p2pfl.errors import ConfigError
from simulations import learning_oracle as lo


def _run(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    assert lo.main(["--seed", "1", "--rounds", "3", *extra]) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def test_agg_values_are_read_as_toml() -> None:
    assert lo._setting('rule="median"') == ("rule", "median")
    assert lo._setting("f=1") == ("f", 1)
    assert lo._setting("nnm=false") == ("nnm", False)


def test_the_pipeline_follows_its_settings(capsys: pytest.CaptureFixture[str]) -> None:
    mean = _run(capsys)
    # the mean rule with a radius no row reaches is the plain mean, to the digit
    as_mean = _run(capsys, "--pipeline", "--agg", 'rule="mean"', "--agg", "self_clip_scale=1e9")
    assert (as_mean["mean"], as_mean["min"]) == (mean["mean"], mean["min"])
    # the default pipeline (geomed after self-clipping) mixes differently
    default = _run(capsys, "--pipeline")
    assert (default["mean"], default["min"]) != (mean["mean"], mean["min"])


def test_a_bad_setting_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match="rule"):
        lo.main(["--rounds", "1", "--pipeline", "--agg", 'rule="avg"'])


def test_a_bucket_of_one_is_the_rule_itself() -> None:
    rows = np.arange(12, dtype=np.float64).reshape(4, 3)
    assert np.array_equal(lo.bucketed(lambda r: r.sum(axis=0), 1, 0)(rows), rows.sum(axis=0))


@pytest.mark.parametrize("seed", range(5))
def test_every_row_lands_in_one_bucket_and_the_own_row_in_the_first(seed: int) -> None:
    rows = np.eye(9)  # row i is the unit vector e_i: a bucket mean shows its members
    means = lo.bucketed(lambda r: r, 2, seed)(rows)
    members = means > 0
    assert means.shape == (5, 9)
    assert members.sum(axis=0).tolist() == [1] * 9  # each row in exactly one bucket
    assert members.sum(axis=1).tolist() == [2, 2, 2, 2, 1]
    assert members[0, 0]  # the own model leads the first bucket
    assert np.allclose(means[members], 1.0 / np.repeat([2, 2, 2, 2, 1], [2, 2, 2, 2, 1]))


def test_each_call_draws_new_buckets_reproducibly() -> None:
    rows = np.eye(9)
    first, again = lo.bucketed(lambda r: r, 2, 3), lo.bucketed(lambda r: r, 2, 3)
    draws = [first(rows) for _ in range(4)]
    assert all(np.array_equal(d, again(rows)) for d in draws)  # same seed, same sequence
    assert any(not np.array_equal(draws[0], d) for d in draws[1:])  # but not the same draw every call


def test_bucketing_is_an_option_of_the_harness(capsys: pytest.CaptureFixture[str]) -> None:
    plain = _run(capsys, "--geomed")
    assert _run(capsys, "--geomed", "--bucket", "1") == {**plain, "bucket": 1}
    bucketed = _run(capsys, "--geomed", "--bucket", "2")
    assert bucketed["bucket"] == 2
    assert (bucketed["mean"], bucketed["min"]) != (plain["mean"], plain["min"])
