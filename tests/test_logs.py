"""Structured logs: JSON lines that parse, the peer id on every line, events with their fields, rotation."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pfl.logs import EVENTS, LogOptions, event, round_event, setup_logging
from p2pfl.peer_rounds import RoundReport


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_parse_and_carry_the_peer_id_and_event_fields(tmp_path: Path, restore_root: None) -> None:
    path = tmp_path / "peer.log"
    peer_filter = setup_logging(LogOptions(format="json", file=path))
    log = logging.getLogger("p2pfl.test")
    log.info("before the identity is known")
    peer_filter.peer_id = "12D3KooWme"
    log.warning(
        "evicting peer=%s reason=%s",
        "12D3KooWbad",
        "x",
        extra=event("eviction", peer="12D3KooWbad", reason="x"),
    )
    report = RoundReport(3, 4, 0.5, math.nan, 0.9, 2, 2, ["a"], False, 1.25)
    log.info("round done", extra=round_event(report))
    log.info(
        'odd "quotes" and\nnewlines \u00e9', extra=event("rejection", peer="p", counts={"replay": 2}, ts="x")
    )
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("with a traceback")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 5
    assert records[0]["peer_id"] == "-"
    assert all(r["peer_id"] == "12D3KooWme" for r in records[1:])
    assert (
        records[1]["event"] == "eviction"
        and records[1]["peer"] == "12D3KooWbad"
        and records[1]["reason"] == "x"
    )
    rnd = records[2]
    assert rnd["event"] == "round" and set(EVENTS["round"]) <= set(rnd)
    assert rnd["val_loss"] is None and rnd["evicted"] == 1 and rnd["duration_s"] == 1.25  # NaN: null
    assert records[3]["counts"] == {"replay": 2} and records[3]["ts"] != "x"  # a field never hides a base key
    assert "ValueError: boom" in records[4]["exc"]
    for r in records:
        assert {"ts", "level", "logger", "peer_id", "msg"} <= set(r)


def test_text_lines_carry_the_peer_id(tmp_path: Path, restore_root: None) -> None:
    path = tmp_path / "peer.log"
    setup_logging(LogOptions(file=path)).peer_id = "12D3KooWme"
    logging.getLogger("p2pfl.test").info("hello")
    assert "[12D3KooWme] hello" in path.read_text()


def test_the_log_file_rotates_by_size(tmp_path: Path, restore_root: None) -> None:
    path = tmp_path / "peer.log"
    setup_logging(LogOptions(format="json", file=path, max_bytes=2048, backups=2))
    log = logging.getLogger("p2pfl.test")
    for i in range(200):
        log.info("line %d %s", i, "x" * 50)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["peer.log", "peer.log.1", "peer.log.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 2048
        for line in p.read_text().splitlines():
            json.loads(line)


def test_an_event_may_name_its_own_peer_for_processes_running_several(
    tmp_path: Path, restore_root: None
) -> None:
    """A simulation or an application runs several peers in one process: an event that names its peer is
    stamped with that peer's id (JSON and text), other lines with the process's."""
    path = tmp_path / "peer.log"
    setup_logging(LogOptions(format="json", file=path)).peer_id = "12D3KooWprocess"
    log = logging.getLogger("p2pfl.test")
    fields = {"version": 4, "from_version": 2, "reason": "passed", "delta_auc": 0.1, "delta_f1": math.nan}
    log.info("promoted", extra=event("promotion", peer_id="12D3KooWother", **fields))
    log.info("plain line")
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["peer_id"] == "12D3KooWother" and first["event"] == "promotion"
    assert set(EVENTS["promotion"]) <= set(first) and first["delta_f1"] is None
    assert "event_peer_id" not in first
    assert second["peer_id"] == "12D3KooWprocess"
    text = tmp_path / "peer.txt"
    setup_logging(LogOptions(file=text)).peer_id = "12D3KooWprocess"
    log.info("promoted", extra=event("promotion", peer_id="12D3KooWother", **fields))
    assert "[12D3KooWother] promoted" in text.read_text()
