"""Bucketing before the rule (``AggregationConfig.bucket``, p2pfl/aggregation/bucketing.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pfl.aggregation import AggregationConfig, aggregate
from p2pfl.aggregation.bucketing import bucket_rows
from p2pfl.config.loader import parse_config
from p2pfl.errors import AggregationError, ConfigError
from p2pfl.identity import Identity
from p2pfl.protocol import GossipEngine, ProtocolConfig, Publish
from tests.config.test_schema import doc
from tests.protocol.test_engine import Net, model


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 12),
    size=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    weighted=st.booleans(),
)
def test_buckets_partition_the_rows_and_keep_their_weight(
    k: int, size: int, seed: int, weighted: bool
) -> None:
    """Every row is in exactly one bucket: the buckets' weights add up to the rows' and their weighted
    means to the rows' weighted sum; the own row (0) is in the first bucket."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(k, 3)).astype(np.float32)
    w = rng.uniform(0.1, 2.0, size=k) if weighted else None
    out, totals = bucket_rows(x, w, size, np.random.default_rng(seed))
    if size == 1 or k < 3:
        assert out is x and totals is w
        return
    assert out.shape == (-(-k // size), 3)
    tw = np.full(out.shape[0], float(size)) if totals is None else totals  # None: full, equal buckets
    ww = np.ones(k) if w is None else w
    assert np.isclose(tw.sum(), ww.sum())
    assert np.allclose((tw[:, None] * out).sum(0), (ww[:, None] * x).sum(0), atol=1e-4)
    # the own row is in the first bucket: moving it moves only the first bucket's mean
    y = x.copy()
    y[0] += 100.0
    out2, _ = bucket_rows(y, w, size, np.random.default_rng(seed))
    assert not np.allclose(out2[0], out[0]) and np.allclose(out2[1:], out[1:])


def test_unequal_buckets_get_weights_and_full_ones_none() -> None:
    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    _, totals = bucket_rows(x, None, 2, np.random.default_rng(0))
    assert totals is not None and sorted(totals.tolist()) == [1.0, 2.0, 2.0, 2.0]
    _, totals = bucket_rows(x[:6], None, 2, np.random.default_rng(0))
    assert totals is None


def test_the_draw_is_the_generators() -> None:
    """Same generator state, same buckets; the buckets change from one draw to the next."""
    x = np.random.default_rng(1).normal(size=(9, 4)).astype(np.float32)
    a, _ = bucket_rows(x, None, 2, np.random.default_rng(5))
    b, _ = bucket_rows(x, None, 2, np.random.default_rng(5))
    assert np.array_equal(a, b)
    rng = np.random.default_rng(5)
    draws = {bucket_rows(x, None, 2, rng)[0].tobytes() for _ in range(10)}
    assert len(draws) > 1


def test_the_mean_is_unchanged_by_bucketing() -> None:
    """The mean of the bucket means weighted by their totals is the mean of the rows: bucketing changes only
    what a robust rule sees."""
    rng = np.random.default_rng(3)
    own, nb = rng.normal(size=5), rng.normal(size=(6, 5))
    plain = aggregate(AggregationConfig(rule="mean", self_clip_scale=None), own, nb)
    bucketed = aggregate(
        AggregationConfig(rule="mean", self_clip_scale=None, bucket=2), own, nb, rng=np.random.default_rng(0)
    )
    assert np.allclose(plain, bucketed, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(1.0, 1e6), seed=st.integers(0, 2**32 - 1))
def test_one_bad_row_among_nine_cannot_move_the_geometric_median_far(scale: float, seed: int) -> None:
    """Own row + 8 neighbours in buckets of 2 are 5 buckets: one bad row spoils one, a minority, so the
    geometric median stays within the honest rows' reach however far the bad row is."""
    rng = np.random.default_rng(seed)
    honest = rng.normal(size=(8, 6))
    bad = np.full((1, 6), scale)
    out = aggregate(
        AggregationConfig(bucket=2, self_clip_scale=None), honest[0], np.vstack([honest[1:], bad]), rng=rng
    )
    assert np.linalg.norm(out - honest.mean(0)) < 4.0 * float(np.abs(honest).max()) + 1.0


def test_bucketing_needs_a_generator_and_a_valid_size() -> None:
    cfg = AggregationConfig(bucket=2)
    with pytest.raises(AggregationError, match="random generator"):
        aggregate(cfg, np.zeros(3), np.ones((4, 3)))
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ConfigError, match="bucket"):
            AggregationConfig(bucket=bad)  # type: ignore[arg-type]
    with pytest.raises(AggregationError, match="bucket size"):
        bucket_rows(np.zeros((3, 2), np.float32), None, 0, np.random.default_rng(0))


def _round(bucket: int, seed: int = 1) -> tuple[GossipEngine, list[float]]:
    """Peer ``seed`` mixes six neighbours' trained models (1..6) after training to 0: its new model and its
    neighbours' scores."""
    agg = AggregationConfig(bucket=bucket)
    engines = [
        GossipEngine(Identity(bytes([i]) * 32), ProtocolConfig(network_id="t"), model(), aggregation=agg)
        for i in range(seed, seed + 7)
    ]
    net = Net(engines)
    net.now = 1.0
    for e, t in zip(engines[1:], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], strict=True):
        net.run(e, [a for a in e.finish_round(model(t), net.now).actions if isinstance(a, Publish)])
    out = engines[0].finish_round(model(0.0), net.now)
    return engines[0], [out.scores[p].combined for p in sorted(out.scores)]


def test_the_engine_buckets_the_mix_not_the_scores() -> None:
    """The scores are taken against an unbucketed reference (a random yardstick would make them random), the
    mix is bucketed; the buckets are keyed by the identity, so a run is reproducible."""
    plain, plain_scores = _round(1)
    bucketed, scores = _round(2)
    again, _ = _round(2)
    assert scores == plain_scores
    assert not np.array_equal(bucketed.own, plain.own)
    assert np.array_equal(bucketed.own, again.own)
    other, _ = _round(2, seed=20)
    assert not np.array_equal(other.own, bucketed.own)


def test_a_peer_config_turns_it_on_and_refuses_a_bad_size() -> None:
    """``[aggregation] bucket`` in a peer's config file reaches the engine's config; 0 is a config error."""
    cfg = parse_config(doc(aggregation={"bucket": 2}), Path("."))
    assert cfg.peer.aggregation.bucket == 2
    with pytest.raises(ConfigError, match="bucket"):
        parse_config(doc(aggregation={"bucket": 0}), Path("."))
