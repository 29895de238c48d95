"""The ``p2pfl`` command as users run it: a real subprocess, real files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from p2pfl.identity import load_key


def p2pfl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pfl.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def test_keygen_writes_a_private_key_and_prints_its_peer_id(tmp_path: Path) -> None:
    out = p2pfl("keygen", "--out", str(tmp_path / "node.key"))
    assert out.returncode == 0, out.stderr
    peer_id = out.stdout.strip()
    assert peer_id.startswith("12D3KooW")
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600
    assert peer_id == load_key(tmp_path / "node.key").peer_id
    again = p2pfl("id", str(tmp_path / "node.key"))
    assert (0, peer_id) == (again.returncode, again.stdout.strip())


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    first = p2pfl("keygen", "--out", str(key)).stdout.strip()
    refused = p2pfl("keygen", "--out", str(key))
    assert refused.returncode == 1
    assert "already exists" in refused.stderr
    assert first == p2pfl("id", str(key)).stdout.strip()
    forced = p2pfl("keygen", "--out", str(key), "--force")
    assert forced.returncode == 0
    assert first != forced.stdout.strip()


@pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX-only")
def test_id_refuses_a_world_readable_key(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    p2pfl("keygen", "--out", str(key))
    key.chmod(0o644)
    out = p2pfl("id", str(key))
    assert out.returncode == 1
    assert "chmod 600" in out.stderr


def test_demo_then_inspect_accepts_the_envelope_and_rejects_a_tampered_copy(tmp_path: Path) -> None:
    demo = p2pfl("demo", "--out", str(tmp_path))
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "rejected the tampered payload" in demo.stdout
    env = tmp_path / "alice-delta-1.env"
    ok = p2pfl("inspect", str(env), "--json")
    assert ok.returncode == 0, ok.stdout
    report = json.loads(ok.stdout)
    alice = load_key(tmp_path / "alice.key").peer_id
    assert (True, alice, 1, "delta") == (report["valid"], report["sender"], report["seq"], report["kind"])
    assert [t["name"] for t in report["tensors"]] == ["layer0.bias", "layer0.weight"]

    data = bytearray(env.read_bytes())
    data[-1] ^= 0xFF
    bad = tmp_path / "bad.env"
    bad.write_bytes(bytes(data))
    rejected = p2pfl("inspect", str(bad), "--json")
    assert rejected.returncode == 1
    assert {k: json.loads(rejected.stdout)[k] for k in ("valid", "reason")} == {
        "valid": False,
        "reason": "digest_mismatch",
    }
    human = p2pfl("inspect", str(bad))
    assert human.stdout.startswith("REJECTED (digest_mismatch)")


def test_inspect_checks_network_and_sender_when_asked(tmp_path: Path) -> None:
    p2pfl("demo", "--out", str(tmp_path))
    env = str(tmp_path / "alice-delta-1.env")
    assert p2pfl("inspect", env, "--network", "other").returncode == 1
    bob = load_key(tmp_path / "bob.key").peer_id
    assert "sender_mismatch" in p2pfl("inspect", env, "--sender", bob).stdout


def test_inspect_missing_file_fails_cleanly(tmp_path: Path) -> None:
    out = p2pfl("inspect", str(tmp_path / "nope.env"))
    assert out.returncode == 1
    assert "cannot read" in out.stderr
    assert "Traceback" not in out.stderr


def test_usage_errors_exit_2() -> None:
    assert p2pfl("keygen").returncode == 2
    assert p2pfl().returncode == 2
