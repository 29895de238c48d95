"""Quality deltas and the rollout in a peer's metrics and structured logs (issue 19): the gauges and counters
move with scripted model quality, and every promotion, demotion and rollback is a JSON log event with its
fields and the peer's id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from p2pfl.identity import Identity
from p2pfl.logs import EVENTS, JsonFormatter, PeerIdFilter
from p2pfl.peer import Peer, PeerConfig
from p2pfl.rollout import RolloutConfig
from p2pfl.transport.memory import MemoryNetwork
from tests.metrics.test_peer_metrics import scrape
from tests.rollout.test_rollout_peer import QualityLearner

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def rollout_peer(tmp_path: Path, trained: list[float], registry: CollectorRegistry, **rollout: Any) -> Peer:
    config = PeerConfig(
        network_id="digits",
        status_interval_s=0,
        state_dir=tmp_path,
        min_neighbours=0,
        scoring_enabled=False,
        join_on_start=False,
        rollout=RolloutConfig(**rollout),
    )
    net = MemoryNetwork()
    return Peer(
        config,
        QualityLearner(trained),
        Identity(b"\x03" * 32),
        transport=lambda i: net.open(network_id="digits", seed=i.seed),
        metrics=registry,
    )


@pytest.fixture
def json_lines() -> Iterator[list[dict[str, Any]]]:
    """The ``p2pfl.peer`` logger's lines through the JSON formatter (as ``--log-format json`` writes them),
    with a process id that is not the peer's: an event names its own peer."""
    records: list[dict[str, Any]] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(json.loads(self.format(record)))

    handler = Lines()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(PeerIdFilter("12D3KooWprocess"))
    logger = logging.getLogger("p2pfl.peer")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def value(s: Samples, name: str, **labels: str) -> float | None:
    return s.get((name, tuple(sorted(labels.items()))))


async def test_a_better_candidate_moves_the_quality_gauges_and_the_promotion_counter(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    peer = rollout_peer(
        tmp_path, [0.3, 0.9, 0.9, 0.9, 0.9], registry, enabled=True, shadow_rounds=2, promote_after=1
    )
    seen: list[Samples] = []
    async with peer:
        first = scrape(registry)
        for _ in range(5):
            await peer.step()
            seen.append(scrape(registry))
    # before any round: the counters are there at 0, the quality gauges are absent (undefined)
    assert value(first, "p2pfl_rollout_promotions_total") == 0
    assert value(first, "p2pfl_rollout_enabled") == 1
    assert value(first, "p2pfl_validation_auc") is None and value(first, "p2pfl_rollout_serving_seq") is None
    # round 1: v1 served; rounds 2-3: v2 in shadow, then canary; round 4: promoted; round 5: v5 in shadow
    assert [value(s, "p2pfl_rollout_serving_seq") for s in seen] == [1, 1, 1, 2, 2]
    assert [value(s, "p2pfl_rollout_promotions_total") for s in seen] == [0, 0, 0, 1, 1]
    assert [value(s, "p2pfl_rollout_candidate_phase", phase="canary") for s in seen] == [0, 0, 1, 0, 0]
    assert value(seen[1], "p2pfl_rollout_candidate_phase", phase="shadow") == 1
    assert value(seen[1], "p2pfl_rollout_candidate_seq") == 2
    assert value(seen[1], "p2pfl_rollout_candidate_delta_auc") > 0.1  # type: ignore[operator]
    assert value(seen[1], "p2pfl_rollout_candidate_delta_f1") > 0.1  # type: ignore[operator]
    last = seen[-1]
    snap = peer.quality_snapshot()
    for key, name in (
        ("val_f1", "p2pfl_validation_f1"),
        ("val_auc", "p2pfl_validation_auc"),
        ("delta_auc", "p2pfl_quality_delta_auc"),
        ("delta_f1", "p2pfl_quality_delta_f1"),
        ("base_seq", "p2pfl_quality_base_seq"),
    ):
        assert value(last, name) == pytest.approx(snap[key]), name
    assert 0.5 < value(last, "p2pfl_validation_auc") <= 1  # type: ignore[operator]
    assert (
        value(last, "p2pfl_validation_accuracy") is not None
        and value(last, "p2pfl_validation_loss") is not None
    )
    assert (
        value(last, "p2pfl_rollout_demotions_total") == 0
        and value(last, "p2pfl_rollout_rollbacks_total") == 0
    )
    assert value(last, "p2pfl_metrics_errors_total") == 0


async def test_demotions_and_rollbacks_are_counted_and_logged_as_events_with_the_peer_id(
    tmp_path: Path, json_lines: list[dict[str, Any]]
) -> None:
    """A better v2 is promoted, the host's feedback then shows it worse: serving rolls back to v1; the next
    candidates (judged on that feedback) are demoted. Each is a counter step and a JSON event."""
    registry = CollectorRegistry()
    cfg = {"enabled": True, "shadow_rounds": 0, "promote_after": 2}
    peer = rollout_peer(tmp_path, [0.3, 0.9, 0.9, 0.9, 0.9, 0.9], registry, **cfg)
    async with peer:
        for _ in range(3):
            await peer.step()
        promoted = scrape(registry)
        rng = np.random.default_rng(1)
        z = rng.integers(0, 2, 2000)
        x = np.stack([z.astype(np.float32), rng.random(2000).astype(np.float32)], axis=1)
        peer.rollout.submit_feedback(x, 1 - z)  # the labels are the opposite of what v2 learned
        for _ in range(3):
            await peer.step()
        after = scrape(registry)
    assert (
        value(promoted, "p2pfl_rollout_serving_seq") == 2
        and value(promoted, "p2pfl_rollout_promotions_total") == 1
    )
    assert value(promoted, "p2pfl_rollout_feedback_samples") == 0
    assert value(after, "p2pfl_rollout_rollbacks_total") == 1
    assert value(after, "p2pfl_rollout_serving_seq") == 1
    assert value(after, "p2pfl_rollout_demotions_total") >= 1  # type: ignore[operator]
    assert value(after, "p2pfl_rollout_feedback_samples") == 2000
    status = peer.rollout.status()
    assert value(after, "p2pfl_rollout_demotions_total") == status["demotions"]

    me = peer.peer_id
    events = [r for r in json_lines if r.get("event") in ("promotion", "demotion", "rollback", "canary")]
    for r in events:
        assert r["peer_id"] == me and r["logger"] == "p2pfl.peer", r
        assert set(EVENTS[r["event"]]) <= set(r), r
        assert me in r["msg"]
    promotions = [r for r in events if r["event"] == "promotion"]
    assert [(r["version"], r["from_version"]) for r in promotions] == [(1, None), (2, 1)]
    assert promotions[1]["delta_auc"] > 0 and promotions[1]["level"] == "info"
    rollbacks = [r for r in events if r["event"] == "rollback"]
    assert [(r["version"], r["from_version"], r["level"]) for r in rollbacks] == [(1, 2, "warning")]
    assert rollbacks[0]["delta_auc"] < 0 and rollbacks[0]["reason"].startswith("serving seq 2 dropped")
    demotions = [r for r in events if r["event"] == "demotion"]
    assert len(demotions) == status["demotions"]
    assert all(r["serving_version"] == 1 and r["phase"] == "canary" and r["delta_auc"] < 0 for r in demotions)
    canaries = [r for r in events if r["event"] == "canary"]
    assert canaries and all(r["canary_fraction"] == 0.1 for r in canaries)


async def test_with_the_rollout_off_the_deltas_compare_with_the_previous_version(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    peer = rollout_peer(tmp_path, [0.3, 0.9, 0.2], registry)
    seen = []
    async with peer:
        for _ in range(3):
            await peer.step()
            seen.append(scrape(registry))
    assert value(seen[0], "p2pfl_rollout_enabled") == 0
    assert [value(s, "p2pfl_rollout_serving_seq") for s in seen] == [1, 2, 3]  # the newest is served
    assert value(seen[0], "p2pfl_quality_delta_auc") is None  # no previous version yet
    assert value(seen[1], "p2pfl_quality_delta_auc") > 0 > value(seen[2], "p2pfl_quality_delta_auc")  # type: ignore[operator]
    assert value(seen[2], "p2pfl_rollout_candidate_seq") is None
    assert value(seen[2], "p2pfl_rollout_promotions_total") == 0
