"""The validation-loss cache: a loss is filed under the replica version that was evaluated."""

from __future__ import annotations

import numpy as np
import pytest

from p2pfl.protocol import Publish, ValLossCache
from tests.protocol.test_engine import Net, engine, train_step


def test_a_loss_is_filed_under_the_version_evaluated_even_if_the_replica_moved_on() -> None:
    """Regression: the loss was filed under the version the replica had when evaluation *ended*; a delta
    applied meanwhile got the old model's loss, and the new model was never evaluated."""
    a, b = engine(1), engine(2)
    net = Net([a, b])
    net.run(a, a.finish_round(train_step(a, 0.5), 0).actions)
    rep = b.replicas[a.peer_id]
    old_version, old_vec = rep.version, rep.vec.copy()
    cache = ValLossCache()
    jobs = cache.plan(b.mixing_candidates(0))
    assert [(j.peer, j.version) for j in jobs] == [(a.peer_id, old_version)]
    job = jobs[0]
    assert not job.vec.flags.writeable
    assert not np.shares_memory(job.vec, rep.vec)
    with pytest.raises(ValueError, match="read-only"):
        job.vec[0] = 1.0
    # while the job is being evaluated, gossip moves the replica on
    publish = a.finish_round(train_step(a, 0.5), 1).actions[0]
    assert isinstance(publish, Publish)
    b.handle_announce(publish.envelope, a.peer_id, 1)
    assert rep.seq == old_version[0] + 1
    assert np.array_equal(job.vec, old_vec)  # the job still holds what was planned
    cache.record(jobs, [0.7])
    assert cache.version_of(a.peer_id) == old_version
    assert cache.losses(b.mixing_candidates(1)) == {}  # no loss for a version never evaluated
    again = cache.plan(b.mixing_candidates(1))
    assert [(j.peer, j.version) for j in again] == [(a.peer_id, rep.version)]
    cache.record(again, [0.2])
    assert cache.losses(b.mixing_candidates(1)) == {a.peer_id: 0.2}


def test_an_unchanged_version_is_not_evaluated_again_and_departed_peers_are_forgotten() -> None:
    a, b, c = engine(1), engine(2), engine(3)
    net = Net([a, b, c])
    net.run(a, a.finish_round(train_step(a, 0.5), 0).actions)
    net.run(b, b.finish_round(train_step(b, 0.5), 0).actions)
    cache = ValLossCache()
    cands = c.mixing_candidates(0)
    jobs = cache.plan(cands)
    assert sorted(j.peer for j in jobs) == sorted([a.peer_id, b.peer_id])
    cache.record(jobs, [0.1 if j.peer == a.peer_id else 0.2 for j in jobs])
    assert cache.plan(cands) == []
    assert cache.losses(cands) == {a.peer_id: 0.1, b.peer_id: 0.2}
    only_a = [r for r in cands if r.peer == a.peer_id]
    assert cache.plan(only_a) == []
    assert cache.version_of(b.peer_id) is None  # b is no candidate any more: forgotten
    with pytest.raises(ValueError):
        cache.record(jobs, [0.1])  # one loss per job
