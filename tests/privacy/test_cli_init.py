"""``p2pfl init`` writes a production peer config with DP on and a stated budget, which loads as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pfl.cli import main
from p2pfl.config.loader import load_config


def test_init_writes_a_config_with_record_level_dp_and_the_stated_budget(tmp_path: Path) -> None:
    out = tmp_path / "peer.toml"
    assert (
        main(["init", "--out", str(out), "--network", "hospital-net", "--epsilon", "2", "--rounds", "60"])
        == 0
    )
    cfg = load_config(out)
    privacy = cfg.peer.privacy
    assert (privacy.mode, privacy.epsilon, privacy.delta, privacy.rounds) == ("record", 2.0, 1e-5, 60)
    assert cfg.peer.roster == tmp_path / "roster.bin"  # a closed network
    assert cfg.rounds == 60


def test_init_refuses_to_overwrite_and_refuses_bad_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "peer.toml"
    out.write_text("keep me")
    assert main(["init", "--out", str(out), "--network", "n"]) == 1
    assert out.read_text() == "keep me"
    assert "exists" in capsys.readouterr().err
    assert main(["init", "--out", str(tmp_path / "b.toml"), "--network", "n", "--delta", "0.5"]) == 1
    assert "[privacy] delta" in capsys.readouterr().err
    assert not (tmp_path / "b.toml").exists()
