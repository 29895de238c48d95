"""simulations/hold_trace.py's ``pull``: an attacker's coefficient in the mix a peer actually computes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from p2pfl.aggregation import AggregationConfig, aggregate
from p2pfl.scoring import persistence as persistence_mod
from p2pfl.sim import hold_trace
from p2pfl.sim.hold_trace import pull_shares, record_persistence, report_persistence


def _rows(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    own = rng.normal(size=20).astype(np.float32)
    stack = (own + rng.normal(scale=0.3, size=(5, 20))).astype(np.float32)
    return own, stack


def test_geomed_pulls_are_the_coefficients_of_the_mix() -> None:
    """The own row's coefficient and the neighbours' sum to 1 and rebuild the library's mix."""
    cfg = AggregationConfig()
    own, stack = _rows()
    weights = np.array([1.0, 1.0, 0.0, 1.0, 1.0])  # equal kept weights: the plain median radius
    pulls = pull_shares(cfg, own, stack, weights, None)
    assert pulls is not None and len(pulls) == 4
    mix = aggregate(cfg, own, stack, weights)
    own_coef = 1.0 - sum(pulls)
    kept = stack[weights > 0]
    radius = cfg.self_clip_scale * np.median(np.linalg.norm(kept - own, axis=1))  # type: ignore[operator]
    dist = np.linalg.norm(kept - own, axis=1, keepdims=True)
    clipped = own + (kept - own) * np.minimum(1.0, radius / dist)
    rebuilt = own_coef * own + np.asarray(pulls) @ clipped
    assert np.allclose(rebuilt, mix, atol=1e-3 * float(np.linalg.norm(mix)))


def test_a_row_in_the_dense_middle_pulls_more_than_its_weight_and_a_far_one_less() -> None:
    cfg = AggregationConfig()
    own, stack = _rows()
    centre = np.median(np.vstack([own[None, :], stack]), axis=0).astype(np.float32)
    far = (own + 1.9 * (stack[0] - own)).astype(np.float32)
    rows = np.vstack([stack[1:], centre[None, :], far[None, :]])
    pulls = pull_shares(cfg, own, rows, np.ones(rows.shape[0]), None)
    assert pulls is not None
    weight_share = 1.0 / (rows.shape[0] + 1)
    assert pulls[-2] > weight_share > pulls[-1]


def test_the_mean_pulls_by_weight_and_the_median_is_not_decomposed() -> None:
    own, stack = _rows()
    weights = np.array([1.0, 2.0, 1.0, 0.0, 1.0])
    pulls = pull_shares(AggregationConfig(rule="mean"), own, stack, weights, 1.0)
    assert pulls is not None and np.allclose(pulls, [1 / 6, 2 / 6, 1 / 6, 1 / 6])
    assert pull_shares(AggregationConfig(rule="median"), own, stack, weights, 1.0) is None


def test_persistence_recording_keeps_each_full_window_and_reports_by_side(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--persistence``: every full window's smallest ``r`` is kept, honest neighbours and attackers are
    reported apart, and the record is emptied after each report."""
    distance = persistence_mod.PersistentDistance
    monkeypatch.setattr(distance, "observe", distance.observe)  # restored after the test
    monkeypatch.setattr(persistence_mod, "_hold_traced", False, raising=False)
    record_persistence()
    record_persistence()  # idempotent: one wrapper, each window kept once
    t = distance(persistence_mod.PersistenceConfig(window=2, soft=2.0, hard=3.0))
    for peer, rs in (("h", (1.0, 2.0, 1.5)), ("x", (5.0, 4.0))):
        for r in rs:
            t.observe(peer, r)
    assert hold_trace._kept == [("h", 1.0), ("h", 1.5), ("x", 4.0)]
    peers = [SimpleNamespace(index=0, honest=True), SimpleNamespace(index=1, honest=False)]
    plan = SimpleNamespace(peer_ids=["h", "x"], peers=peers)
    report_persistence(SimpleNamespace(plan=plan))
    out = capsys.readouterr().out
    assert "honest neighbours (2 windows): p90 1.45 p99 1.50 max 1.50; >= 3: 0.0 %" in out
    assert "attacking neighbours (1 windows): p90 4.00 p99 4.00 max 4.00; >= 3: 100.0 %, >= 4: 100.0 %" in out
    assert hold_trace._kept == []
