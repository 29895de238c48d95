"""The ``p2pfl`` command as users run it: a real subprocess, real files."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import resource
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------------- one line, exit codes


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    """stderr holds exactly one line (no traceback); returns it."""
    lines = out.stderr.strip().splitlines()
    assert 1 == len(lines), out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    out = p2pfl("--version")
    assert (0, f"p2pfl {version('p2pfl-gossip')}") == (out.returncode, out.stdout.strip())


def _options_without_a_described_default(parser: argparse.ArgumentParser) -> list[str]:
    """Options whose --help line lacks a description, or (unless required) a default."""
    missing = []
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                missing += _options_without_a_described_default(sub)
            continue
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        text = formatter._expand_help(action) if action.help else ""
        if not text or not (action.required or "default" in text):
            missing.append(f"{parser.prog} {action.option_strings[0]}")
    return missing


def test_every_option_of_both_commands_has_a_description_and_its_default() -> None:
    from p2pfl.bootstrap.__main__ import build_parser as bootstrap_parser
    from p2pfl.cli import build_parser

    assert [] == _options_without_a_described_default(build_parser())
    assert [] == _options_without_a_described_default(bootstrap_parser())


@pytest.mark.parametrize(
    ("args", "code"),
    [(("id", "KEY"), 141), (("audit", "verify", "DIR", "-v"), 141), (("--help",), 0)],
    ids=["id", "audit", "help"],
)
def test_a_reader_that_went_away_ends_the_command_quietly(
    tmp_path: Path, args: tuple[str, ...], code: int
) -> None:
    """`p2pfl ... | head`: stdout is a pipe whose reader is gone before anything is written (argparse's own
    --help output ignores the closed pipe and exits 0)."""
    p2pfl("keygen", "--out", str(tmp_path / "k.key"))
    state = tmp_path / "state"
    from p2pfl.identity import load_key
    from p2pfl.state import VersionLog

    log = VersionLog(state, load_key(tmp_path / "k.key"))
    for seq in range(1, 200):
        log.append(event="version", seq=seq, round=seq, digest=bytes(32))
    args = tuple(str(tmp_path / "k.key") if a == "KEY" else str(state) if a == "DIR" else a for a in args)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "p2pfl.cli", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (code, "") == (out.returncode, out.stderr)


def test_inspect_refuses_a_device_without_reading_it(tmp_path: Path) -> None:
    out = p2pfl("inspect", "/dev/urandom")  # reading it whole would never end
    assert 1 == out.returncode
    assert "/dev/urandom: not a regular file or a pipe" in one_error_line(out)


def test_inspect_refuses_a_file_over_the_envelope_limit_by_its_size(tmp_path: Path) -> None:
    from p2pfl.wire import Limits

    big = tmp_path / "big.env"
    with open(big, "wb") as fh:
        fh.truncate(Limits().max_envelope + 1)  # sparse: no disk used, and never read
    out = p2pfl("inspect", str(big), "--json")
    report = json.loads(out.stdout)
    assert (1, False, "oversize", None) == (out.returncode, report["valid"], report["reason"], report["size"])


def test_read_bounded_reads_at_most_one_byte_past_the_limit_from_a_pipe(tmp_path: Path) -> None:
    from p2pfl.cli import read_bounded

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed(n: int) -> None:
        with open(fifo, "wb") as fh, contextlib.suppress(BrokenPipeError):
            fh.write(b"x" * n)

    for n, expected in ((10, b"x" * 10), (11, None), (100_000, None)):
        writer = threading.Thread(target=feed, args=(n,))
        writer.start()
        assert expected == read_bounded(fifo, 10)
        writer.join(timeout=10)
        assert not writer.is_alive()


def test_audit_reports_an_empty_log_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "versions.log").write_bytes(b"")
    out = p2pfl("audit", "verify", str(tmp_path))
    assert (1, "") == (out.returncode, out.stderr)
    assert out.stdout.startswith("EMPTY:") and "holds no records" in out.stdout
    report = json.loads(p2pfl("audit", "verify", str(tmp_path), "--json").stdout)
    assert (False, "empty") == (report["ok"], report["problem"]["kind"])


def test_audit_names_a_record_that_is_not_utf8(tmp_path: Path) -> None:
    frame = b"\x81\xa3\xff\xfe\xfd\x01"
    (tmp_path / "versions.log").write_bytes(len(frame).to_bytes(4, "big") + frame)
    out = p2pfl("audit", "verify", str(tmp_path))
    assert 1 == out.returncode
    assert out.stdout.startswith(
        "BROKEN at record 0 (broken): malformed record: record holds text that is not UTF-8"
    )
    assert "UnicodeDecodeError" not in out.stdout + out.stderr


def test_audit_refuses_a_peer_that_is_not_a_peer_id(tmp_path: Path) -> None:
    out = p2pfl("audit", "verify", str(tmp_path), "--peer", "garbage")
    assert 2 == out.returncode
    assert "argument --peer: 'garbage' is not an Ed25519 peer id" in out.stderr.splitlines()[-1]
    assert "Traceback" not in out.stderr


def test_an_unexpected_failure_inside_a_nursery_is_unwrapped_to_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from p2pfl.cli import EXIT_ENVIRONMENT, run_guarded

    def disk_full() -> int:
        raise ExceptionGroup("nursery", [OSError(errno.ENOSPC, "No space left on device", "/s/checkpoint")])

    assert EXIT_ENVIRONMENT == run_guarded(disk_full)
    assert "error: /s/checkpoint: No space left on device\n" == capsys.readouterr().err

    def bug() -> int:
        raise ExceptionGroup("nursery", [OSError(errno.ENOSPC, "full"), ZeroDivisionError()])

    with pytest.raises(ExceptionGroup):  # a bug among them: the traceback is shown
        run_guarded(bug)


# ------------------------------------------------------------------------------- p2pfl peer


def peer_toml(tmp_path: Path, **peer: object) -> Path:
    lines = ["[peer]", 'network_id = "cli-test"', 'key_file = "node.key"', 'state_dir = "state"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in peer.items()]
    lines += ["[learner]", 'entry = "p2pfl.sim.entry:digits"', "params = { peer_index = 0, num_peers = 1 }"]
    lines += ["[access]", "open = true"]
    path = tmp_path / "peer.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_peer_refuses_a_bad_learner_param_in_one_line_before_writing_anything(tmp_path: Path) -> None:
    config = peer_toml(tmp_path)
    config.write_text(config.read_text().replace("num_peers = 1", 'num_peers = "1"'))
    out = p2pfl("peer", "--config", str(config))
    assert 1 == out.returncode
    assert "error: [learner.params] num_peers: expected int, got str '1'" == one_error_line(out)
    assert not (tmp_path / "node.key").exists()


def test_peer_on_an_address_in_use_fails_in_one_line_with_exit_3(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = p2pfl("peer", "--config", str(peer_toml(tmp_path, listen=f"/ip4/127.0.0.1/tcp/{port}")))
    assert 3 == out.returncode, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last == f"error: cannot listen on /ip4/127.0.0.1/tcp/{port}: Address already in use"
    assert "Traceback" not in out.stderr


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_peer_stops_in_one_line_with_exit_3_when_the_disk_refuses_its_checkpoint(tmp_path: Path) -> None:
    """A real write error (EFBIG from RLIMIT_FSIZE): the checkpoint (about 19 KB) does not fit in 8 KB."""
    config = peer_toml(tmp_path, rounds=2, min_neighbours=0, status_interval_s=0)
    out = subprocess.run(
        [sys.executable, "-m", "p2pfl.cli", "peer", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_file_size_limit(8192),
    )
    assert 3 == out.returncode, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: cannot write checkpoint {tmp_path / 'state' / 'checkpoint.p2ck'}: File too large"
    )
    assert "Traceback" not in out.stderr
    assert "persisted_seq=None" in out.stderr  # the stop line says what is on disk: nothing yet
    assert [] == [p.name for p in (tmp_path / "state").iterdir() if p.name.endswith(".tmp")]


def test_peer_on_a_read_only_state_dir_fails_in_one_line_with_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Root ignores permission bits, so the read-only filesystem is simulated where the peer opens files."""
    from p2pfl.cli import main

    state = str(tmp_path / "state")
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith(state) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    code = main(["peer", "--config", str(peer_toml(tmp_path, rounds=1, min_neighbours=0))])
    err = capsys.readouterr().err.strip().splitlines()
    assert 3 == code
    assert f"error: {state}/.lock: Read-only file system" == err[-1]


def test_the_docs_examples_use_ports_that_do_not_clash() -> None:
    """Followed in order, the registry (docs/bootstrap.md) and the three peers (docs/peer.md) all start."""
    repo = Path(__file__).resolve().parent.parent
    registry = set(
        re.findall(r"--listen /ip4/[\d.]+/tcp/(\d+)", (repo / "docs" / "bootstrap.md").read_text())
    )
    peers = set(re.findall(r'listen = "/ip4/[\d.]+/tcp/(\d+)"', (repo / "docs" / "peer.md").read_text()))
    assert registry and peers
    assert set() == (registry & peers) - {"0"}


def test_python_m_p2pfl_sim_is_the_same_command_as_p2pfl_sim(tmp_path: Path) -> None:
    def sim(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "p2pfl.sim", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    assert p2pfl("sim", "--help").stdout == sim("--help").stdout  # same options, same descriptions
    out = sim(str(tmp_path / "missing.toml"), "--out", str(tmp_path / "out"))
    assert 1 == out.returncode
    assert "missing.toml" in one_error_line(out)
