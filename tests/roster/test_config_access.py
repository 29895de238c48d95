"""``[access] roster`` / ``open`` in a peer's TOML file, and ``p2pfl peer`` refusing to run unlisted."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pfl.cli import main
from p2pfl.config import load_config
from p2pfl.errors import ConfigError

HEAD = """
[peer]
network_id = "net"
key_file = "node.key"
[learner]
entry = "p2pfl.sim.entry:digits"
params = { peer_index = 0, num_peers = 1 }
"""


def write(tmp_path: Path, access: str) -> Path:
    path = tmp_path / "peer.toml"
    path.write_text(HEAD + access)
    return path


@pytest.mark.parametrize("access", ["", "[access]\n", "[access]\nopen = false\n"])
def test_a_peer_config_without_a_roster_must_say_open(tmp_path: Path, access: str) -> None:
    with pytest.raises(ConfigError, match=r"^\[access\] roster: required: .* set \[access\] open = true"):
        load_config(write(tmp_path, access))


def test_open_true_runs_open_and_a_roster_resolves_against_the_config(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "[access]\nopen = true\n")).peer.roster is None
    node = load_config(write(tmp_path, '[access]\nroster = "r.bin"\ncertificates = ["me.cert"]\n'))
    assert (tmp_path / "r.bin", (tmp_path / "me.cert",)) == (node.peer.roster, node.peer.certificates)
    with pytest.raises(ConfigError, match=r"^\[access\] open: cannot be true"):
        load_config(write(tmp_path, '[access]\nroster = "r.bin"\nopen = true\n'))


def test_p2pfl_peer_refuses_to_start_without_a_roster_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["peer", "--config", str(write(tmp_path, ""))])
    _, err = capsys.readouterr()
    assert (1, 1) == (code, len(err.strip().splitlines()))
    assert err.startswith("error: [access] roster: required")
    assert not (tmp_path / "node.key").exists()  # refused before anything is written


def test_p2pfl_peer_refuses_a_missing_roster_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["peer", "--config", str(write(tmp_path, '[access]\nroster = "nope.bin"\n'))])
    _, err = capsys.readouterr()
    assert (3, 1) == (code, len(err.strip().splitlines()))
    assert "nope.bin" in err
    assert not (tmp_path / "node.key").exists()  # refused before the key file is created
