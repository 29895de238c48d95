"""Durable state under hostile bytes and a failing disk: every problem is a ``StateError`` with a reason, and
nothing that was persisted is lost."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from p2pfl.errors import ConfigError, StateError
from p2pfl.identity import Identity
from p2pfl.peer import Peer, PeerConfig
from p2pfl.sim.data import peer_splits
from p2pfl.state import (
    CHECKPOINT_NAME,
    LOG_NAME,
    BanRecord,
    Checkpoint,
    VersionLog,
    load_checkpoint,
    read_log,
    save_checkpoint,
    verify_log,
)
from p2pfl.state import versionlog as versionlog_mod
from p2pfl.transport.memory import MemoryNetwork
from p2pfl.wire import Meta
from tests.test_peer import learner_for

IDENT = Identity(bytes([5]) * 32)


def a_checkpoint(seq: int = 3) -> Checkpoint:
    own = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)}
    return Checkpoint(
        peer_id=IDENT.peer_id,
        network_id="net",
        seq=seq,
        round=seq,
        own=own,
        public=own,
        metrics={"val_loss": 0.5},
        timestamp_ms=1,
    )


def sealed(body: bytes) -> bytes:
    """``body`` with a correct digest, so the decoder's content checks are reached."""
    return body + hashlib.blake2b(body, digest_size=32).digest()


VALID_BODY = a_checkpoint().to_bytes()[:-32]
VALID_MAP: dict[str, Any] = msgpack.unpackb(VALID_BODY, raw=False)


def decodes_or_state_error(data: bytes) -> None:
    """The decoder's contract: a Checkpoint or a StateError, nothing else, whatever the bytes."""
    try:
        Checkpoint.from_bytes(data)
    except StateError as exc:
        assert str(exc)


def nested(depth: int) -> bytes:
    """msgpack for ``[[[...nil...]]]``: deeper than Python's repr or recursion limit would allow."""
    return b"\x91" * depth + b"\xc0"


#: values that broke the old decoder: int() of infinity, repr() of deep nesting, bools as ints
SPECIAL_VALUES = [float("inf"), float("-inf"), float("nan"), True, 2**64 - 1, -(2**63), [[[[[[[[]]]]]]]]]

msgpack_values = st.sampled_from(SPECIAL_VALUES) | st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.binary(max_size=16),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(key="seq", value=float("inf"), drop=False)  # OverflowError in the old decoder
@example(key="metrics", value={"loss": "x"}, drop=False)
@given(
    key=st.sampled_from([*sorted(VALID_MAP), "log", "pmeta", "bans", "extra"]),
    value=msgpack_values,
    drop=st.booleans(),
)
def test_a_checkpoint_with_any_field_replaced_decodes_or_raises_state_error(
    key: str, value: Any, drop: bool
) -> None:
    raw = dict(VALID_MAP)
    if drop:
        raw.pop(key, None)
    else:
        raw[key] = value
    decodes_or_state_error(sealed(msgpack.packb(raw, use_bin_type=True)))


@settings(max_examples=400, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, len(VALID_BODY) - 1), st.integers(1, 255)), max_size=4),
    cut=st.integers(0, len(VALID_BODY)),
    tail=st.binary(max_size=8),
)
def test_a_bit_flipped_or_truncated_checkpoint_with_a_recomputed_digest_raises_only_state_error(
    flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    body = bytearray(VALID_BODY)
    for pos, mask in flips:
        body[pos] ^= mask
    decodes_or_state_error(sealed(bytes(body[:cut]) + tail))


_WRONG = {"inf": float("inf"), "nan": float("nan"), "float": -1.5, "bool": True, "str": "7", "list": [1]}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(field, value, id=f"{field}-{name}")
        for field in ("seq", "round", "ts", "peer", "net", "metrics", "own")
        for name, value in {**_WRONG, "map": {"a": "x"}}.items()
        if not (name == "str" and field in ("peer", "net"))
    ],
)
def test_wrongly_typed_checkpoint_fields_are_state_errors(field: str, value: Any) -> None:
    raw = {**VALID_MAP, field: value}
    with pytest.raises(StateError, match=f"malformed|{field}"):
        Checkpoint.from_bytes(sealed(msgpack.packb(raw, use_bin_type=True)))


def test_a_checkpoint_keeps_its_public_version_s_meta_and_an_older_one_has_none() -> None:
    meta = Meta(samples=40, loss=0.25, round=2)
    ckpt = dataclasses.replace(a_checkpoint(), round=7, public_meta=meta)
    assert Checkpoint.from_bytes(ckpt.to_bytes()).public_meta == meta
    assert Checkpoint.from_bytes(a_checkpoint().to_bytes()).public_meta is None  # (written before it)
    for bad in ({"round": -1}, {"loss": float("nan")}, {"round": "2"}, {"epoch": 1}, [2]):
        with pytest.raises(StateError, match="pmeta"):
            Checkpoint.from_bytes(sealed(msgpack.packb({**VALID_MAP, "pmeta": bad}, use_bin_type=True)))


def test_a_checkpoint_keeps_its_ban_records_and_an_older_one_has_none() -> None:
    bans = (
        BanRecord("12D3KooWattacker", 2, 1_800_000_000_000),
        BanRecord("12D3KooWliar", 1, 5, "equivocation"),
    )
    ckpt = dataclasses.replace(a_checkpoint(), bans=bans)
    assert Checkpoint.from_bytes(ckpt.to_bytes()).bans == bans
    assert Checkpoint.from_bytes(a_checkpoint().to_bytes()).bans == ()  # (written before they were kept)


@pytest.mark.parametrize(
    "bad",
    [
        {"x": 1},
        [["p", 1, 5]],
        [["p", 1, 5, None, 0]],
        [["", 1, 5, None]],
        [["p" * 257, 1, 5, None]],
        [[7, 1, 5, None]],
        [["p", -1, 5, None]],
        [["p", True, 5, None]],
        [["p", 1, -5, None]],
        [["p", 1, 5.5, None]],
        [["p", 1, float("inf"), None]],
        [["p", 1, 5, ""]],
        [["p", 1, 5, 3]],
        [["p", 1, 5, "r" * 257]],
        [None],
    ],
)
def test_malformed_ban_records_are_state_errors(bad: Any) -> None:
    with pytest.raises(StateError, match=r"bans|ban record"):
        Checkpoint.from_bytes(sealed(msgpack.packb({**VALID_MAP, "bans": bad}, use_bin_type=True)))


@pytest.mark.parametrize("field", ["peer", "seq", "metrics", "own", "v"])
def test_deeply_nested_checkpoint_fields_are_state_errors(field: str) -> None:
    """A field holding 900 nested lists (within msgpack's own stack limit) once raised RecursionError."""
    raw = {**VALID_MAP, field: None}
    body = msgpack.packb(raw, use_bin_type=True)
    body = body.replace(msgpack.packb(field) + b"\xc0", msgpack.packb(field) + nested(900), 1)
    with pytest.raises(StateError):
        Checkpoint.from_bytes(sealed(body))


def test_a_corrupt_or_truncated_checkpoint_file_is_a_state_error_naming_the_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, a_checkpoint())
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(StateError, match=f"{CHECKPOINT_NAME} is truncated or corrupt"):
        load_checkpoint(tmp_path)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(StateError, match="digest mismatch"):
        load_checkpoint(tmp_path)
    path.write_bytes(sealed(msgpack.packb({**VALID_MAP, "v": 2})))
    with pytest.raises(StateError, match="unsupported version 2"):
        load_checkpoint(tmp_path)


# ------------------------------------------------------------------------------------------- log


def a_log(directory: Path, n: int) -> VersionLog:
    log = VersionLog(directory, IDENT)
    for seq in range(1, n + 1):
        log.append(event="version", seq=seq, round=seq, digest=bytes([seq]) * 32, timestamp_ms=seq)
    return log


def test_a_torn_log_tail_is_reported_then_cut_off_on_open(tmp_path: Path) -> None:
    a_log(tmp_path, 3)
    path = tmp_path / LOG_NAME
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])
    report = verify_log(tmp_path)
    assert (False, 2, "torn") == (report.ok, report.records, report.problem and report.problem.kind)
    log = VersionLog(tmp_path, IDENT)
    assert (2, len(whole) - 5 - path.stat().st_size) == (log.count, log.repaired_bytes)
    assert verify_log(tmp_path).ok


def test_a_log_broken_in_the_middle_refuses_to_open(tmp_path: Path) -> None:
    a_log(tmp_path, 3)
    path = tmp_path / LOG_NAME
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StateError, match="is broken at record 0"):
        VersionLog(tmp_path, IDENT)


def test_a_log_record_with_non_utf8_text_is_reported_as_such(tmp_path: Path) -> None:
    frame = b"\x81\xa3\xff\xfe\xfd\x01"  # {"\xff\xfe\xfd": 1}: a map key that is not UTF-8
    (tmp_path / LOG_NAME).write_bytes(len(frame).to_bytes(4, "big") + frame)
    report = verify_log(tmp_path)
    assert report.problem is not None
    assert ("broken", False) == (report.problem.kind, report.ok)
    assert "not UTF-8" in report.problem.reason


def test_an_empty_log_is_not_ok(tmp_path: Path) -> None:
    (tmp_path / LOG_NAME).write_bytes(b"")
    report = verify_log(tmp_path)
    assert (False, 0, "empty") == (report.ok, report.records, report.problem and report.problem.kind)


def test_a_log_signed_by_another_peer_fails_verification_for_the_expected_peer(tmp_path: Path) -> None:
    a_log(tmp_path, 2)
    report = verify_log(tmp_path, Identity(bytes([6]) * 32).peer_id)
    assert report.problem is not None and "another peer" in report.problem.reason


# ------------------------------------------------------------------------------------ disk faults


@contextmanager
def disk_full_for(paths: Callable[[str], bool], after: int = 0) -> Iterator[None]:
    """``os.write`` on files whose path satisfies ``paths`` writes ``after`` bytes, then fails: ENOSPC."""
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if paths(target):
            if after and len(data):
                return real_write(fd, bytes(data)[:after])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    mp = pytest.MonkeyPatch()
    mp.setattr(os, "write", write)
    try:
        yield
    finally:
        mp.undo()


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_full_disk_during_a_checkpoint_write_keeps_the_old_one_and_no_temp_file(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, a_checkpoint(seq=3))
    with disk_full_for(lambda p: p.endswith(".tmp")), pytest.raises(StateError) as caught:
        save_checkpoint(tmp_path, a_checkpoint(seq=4))
    assert isinstance(caught.value.__cause__, OSError)
    assert "No space left on device" in str(caught.value) and "seq 4 was not persisted" in str(caught.value)
    assert [] == temp_files(tmp_path)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and 3 == ckpt.seq


class _FailingAppend(io.FileIO):
    """An append-mode file that writes half of what it is given, then fails as a full disk does."""

    def write(self, data: Any) -> int:
        half = bytes(data)[: len(data) // 2]
        super().write(half)
        raise OSError(errno.ENOSPC, "No space left on device")


def _open_failing_appends(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    if mode == "ab":
        return _FailingAppend(path, "a")
    return open(path, mode, *args, **kwargs)


def test_a_failed_log_append_is_cut_back_and_the_log_still_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = a_log(tmp_path, 2)
    size = (tmp_path / LOG_NAME).stat().st_size
    monkeypatch.setattr(versionlog_mod, "open", _open_failing_appends, raising=False)
    with pytest.raises(StateError, match=r"No space left on device; it ends at record 1 \(seq 2\)") as caught:
        log.append(event="version", seq=3, round=3, digest=bytes(32))
    assert isinstance(caught.value.__cause__, OSError)
    assert size == (tmp_path / LOG_NAME).stat().st_size  # the half-written record is gone
    assert 2 == log.count
    monkeypatch.undo()
    log.append(event="version", seq=3, round=3, digest=bytes(32))
    report = verify_log(tmp_path)
    assert (True, 3, 3) == (report.ok, report.records, report.last_seq)


# ----------------------------------------------------------------------------- through the peer


def lone_peer(state_dir: Path, ident: Identity = IDENT, network_id: str = "digits") -> Peer:
    split = peer_splits("digits", 1, partition_kind="iid", seed=1)[0]
    net = MemoryNetwork()
    cfg = PeerConfig(
        network_id=network_id,
        local_steps=2,
        state_dir=state_dir,
        status_interval_s=0,
        min_neighbours=0,
        max_round_wait_s=0.1,
    )
    return Peer(
        cfg, learner_for(split, 0), ident, transport=lambda i: net.open(network_id=network_id, seed=i.seed)
    )


async def test_a_log_append_that_fails_after_the_checkpoint_loses_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint carries the round's signed records: a restart appends the ones the log lacks."""
    async with lone_peer(tmp_path) as p:
        await p.run(2)
        monkeypatch.setattr(versionlog_mod, "open", _open_failing_appends, raising=False)
        with pytest.raises(StateError, match="the checkpoint holds seq 3 and its records"):
            await p.run(1)
        assert 3 == p.persisted_seq
        monkeypatch.undo()
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and 3 == ckpt.seq
    report = verify_log(tmp_path)
    assert (True, 2) == (report.ok, report.last_seq)  # the log alone lacks seq 3...
    async with lone_peer(tmp_path) as p:
        pass
    records = read_log(tmp_path)
    assert [("version", 1), ("version", 2), ("version", 3), ("restart", 3)] == [
        (r.event, r.seq) for r in records
    ]  # ...until the next start appends it, before its restart record
    assert verify_log(tmp_path, IDENT.peer_id).ok


async def test_a_checkpoint_write_that_fails_mid_run_stops_the_peer_with_the_persisted_seq(
    tmp_path: Path,
) -> None:
    async with lone_peer(tmp_path) as p:
        await p.run(2)
        full = disk_full_for(lambda path: f"/.{CHECKPOINT_NAME}." in path)
        with full, pytest.raises(StateError) as caught:
            await p.run(1)
        assert "seq 3 was not persisted" in str(caught.value)
        assert 2 == p.persisted_seq
    assert [] == temp_files(tmp_path)
    report = verify_log(tmp_path)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None and (True, 2, 2) == (report.ok, report.last_seq, ckpt.seq)


async def test_stale_temp_files_of_a_killed_peer_are_removed_at_start(tmp_path: Path) -> None:
    async with lone_peer(tmp_path) as p:
        await p.run(1)
    stale = [tmp_path / ".checkpoint.p2ck.0123456789ab.tmp", tmp_path / ".status.json.a1b2c3d4e5f6.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    (tmp_path / "notes.tmp").write_bytes(b"not ours")
    async with lone_peer(tmp_path):
        pass
    assert ["notes.tmp"] == temp_files(tmp_path)


async def test_a_state_dir_of_another_network_is_refused(tmp_path: Path) -> None:
    async with lone_peer(tmp_path) as p:
        await p.run(1)
    with pytest.raises(ConfigError, match=r"belongs to peer .* in network 'digits'"):
        async with lone_peer(tmp_path, network_id="other"):
            pass


def test_a_checkpoint_record_that_does_not_follow_the_log_is_refused(tmp_path: Path) -> None:
    """A log replaced by hand (here: emptied) no longer matches the checkpoint: say so, do not guess."""
    log = a_log(tmp_path, 2)
    [record] = log.prepare([{"event": "version", "seq": 3, "round": 3, "digest": bytes(32)}])
    (tmp_path / LOG_NAME).write_bytes(b"")
    with pytest.raises(StateError, match="holds 0 records, but the checkpoint carries record 2"):
        VersionLog(tmp_path, IDENT).reconcile([record.encoded()])
    log = VersionLog(tmp_path, IDENT)
    with pytest.raises(StateError, match="malformed version record"):
        log.reconcile([b"\xc1"])
