"""The learning oracle's ``--pipeline`` hook (dumbbell16): the library's aggregation pipeline in the
no-protocol harness, configured from the command line."""

from __future__ import annotations

import json

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
