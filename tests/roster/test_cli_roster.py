"""``p2pfl roster ...`` through the CLI entry, in process: files, output, one-line errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pfl.cli import main
from p2pfl.identity import Identity, save_key
from p2pfl.roster import load_certificate, load_roster, verify, verify_certificate


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["roster", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def made(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """An initialised roster with org ``acme`` and one member, signed."""
    roster = tmp_path / "roster.bin"
    assert (
        0
        == run(capsys, "init", "--network", "net", "--key", str(tmp_path / "op.key"), "--out", str(roster))[0]
    )
    org = Identity(bytes([7]) * 32)
    save_key(org, tmp_path / "org.key")
    code, _, err = run(
        capsys,
        "add",
        str(roster),
        "org",
        "acme",
        "--public-key",
        org.peer_id,
        "--max-share",
        "0.25",
        "--max-nodes",
        "4",
    )
    assert code == 0, err
    member = Identity(bytes([8]) * 32).peer_id
    assert 0 == run(capsys, "add", str(roster), "member", member, "--org", "acme", "--role", "trainer")[0]
    assert 0 == run(capsys, "sign", str(roster), "--key", str(tmp_path / "op.key"), "--days", "2")[0]
    return roster


def test_init_add_sign_make_a_roster_peers_accept(made: Path, capsys: pytest.CaptureFixture[str]) -> None:
    roster = load_roster(made)
    verify(roster, network_id="net", now_ms=None)
    assert (1, 1, 1) == (roster.version, len(roster.orgs), len(roster.members))
    assert (0.25, 4) == (roster.orgs[0].max_share, roster.orgs[0].max_nodes)
    assert ("trainer",) == roster.members[0].roles
    code, out, _ = run(capsys, "verify", str(made), "--network", "net")
    assert (0, True) == (code, out.startswith("VALID roster of network net, version 1"))


def test_an_edit_leaves_the_roster_unsigned_until_signed_again(
    made: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    member = Identity(bytes([8]) * 32).peer_id
    assert 0 == run(capsys, "revoke", str(made), "member", member)[0]
    code, out, _ = run(capsys, "verify", str(made))
    assert (1, "INVALID (unsigned)") == (code, out[:18])
    assert 0 == run(capsys, "sign", str(made), "--key", str(made.parent / "op.key"))[0]
    roster = load_roster(made)
    assert (2, (member,), ()) == (roster.version, roster.revoked, roster.members)
    code, out, _ = run(capsys, "show", str(made), "--json")
    shown = json.loads(out)
    assert ("valid", [member], 2) == (shown["status"], shown["revoked"], shown["version"])


def test_verify_refuses_another_network_and_another_operator(
    made: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "verify", str(made), "--network", "other")
    assert (1, "INVALID (wrong_network)") == (code, out[:23])
    code, out, _ = run(capsys, "verify", str(made), "--operator", "00" * 32)
    assert (1, "INVALID (wrong_operator)") == (code, out[:24])


def test_a_tampered_file_is_one_line_and_exit_1(made: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(made.read_bytes())
    data[-1] ^= 1  # the signature's last byte
    made.write_bytes(bytes(data))
    code, out, _ = run(capsys, "verify", str(made))
    assert (1, "INVALID (bad_signature)") == (code, out[:23])
    made.write_bytes(bytes(data[:-5]))
    code, out, err = run(capsys, "show", str(made))
    assert (1, "", 1) == (code, out, len(err.strip().splitlines()))
    assert err.startswith("error: ") and "ends before" in err


def test_signing_with_another_key_is_refused(
    made: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    save_key(Identity(bytes([9]) * 32), tmp_path / "other.key")
    code, _, err = run(capsys, "sign", str(made), "--key", str(tmp_path / "other.key"))
    assert (1, True) == (code, "not the roster's operator key" in err)
    assert 1 == load_roster(made).version


def test_bad_values_are_one_line_errors(made: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, words in (
        (("add", str(made), "member", "12D3KooWnope", "--org", "acme"), "not an Ed25519 peer id"),
        (("add", str(made), "member", Identity(bytes([3]) * 32).peer_id, "--org", "nope"), "no org 'nope'"),
        (("add", str(made), "org", "x", "--public-key", "zz"), "neither 64 hex digits"),
        (("add", str(made), "org", "x", "--public-key", "00" * 32, "--max-share", "1.5"), "--max-share"),
        (("revoke", str(made), "org", "nope"), "no org 'nope'"),
        (("sign", str(made), "--key", str(made.parent / "op.key"), "--version", "1"), "not above"),
        (("init", "--network", "net", "--key", str(made.parent / "op.key"), "--out", str(made)), "exists"),
    ):
        code, _, err = run(capsys, *args)
        assert (1, 1) == (code, len(err.strip().splitlines())), args
        assert words in err, (args, err)


def test_a_missing_file_exits_3_and_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 3 == run(capsys, "show", str(tmp_path / "nope.bin"))[0]
    with pytest.raises(SystemExit) as exc:
        main(["roster", "add", str(tmp_path / "r"), "team", "x"])
    assert exc.value.code == 2


def test_certify_issues_a_certificate_the_roster_admits(
    made: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    peer = Identity(bytes([11]) * 32).peer_id
    cert = made.parent / "m.cert"
    code, _, err = run(
        capsys,
        "certify",
        "--key",
        str(made.parent / "org.key"),
        "--org",
        "acme",
        "--network",
        "net",
        "--peer",
        peer,
        "--out",
        str(cert),
    )
    assert code == 0, err
    import time

    assert (
        "acme" == verify_certificate(load_certificate(cert), load_roster(made), int(time.time() * 1000)).name
    )
