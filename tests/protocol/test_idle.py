"""Replicas of neighbours gone quiet are forgotten (p2pfl/protocol/idle.py): churn leaves a bounded table,
a returning neighbour is mixed again after one snapshot, and a forgotten version cannot be replayed."""

from __future__ import annotations

import pytest

from p2pfl.errors import ConfigError
from p2pfl.protocol import ProtocolConfig, Publish
from p2pfl.protocol.idle import ForgottenBook
from tests.protocol.test_engine import Net, engine, train_step

STALE = 10.0  # max_staleness_s: the default forgetting horizon is ten times this


def test_churn_of_many_identities_leaves_a_bounded_replica_table() -> None:
    """120 identities each publish once, one every 5 fake seconds, and leave: the table holds only those
    heard within the horizon (100 s), not every identity ever seen."""
    b = engine(1, max_staleness_s=STALE)
    sizes = []
    for i in range(120):
        now = 5.0 * i
        visitor = engine(2 + i, max_staleness_s=STALE)
        first = visitor.finish_round(train_step(visitor, 0.5), now).actions[0]
        assert isinstance(first, Publish)
        b.handle_announce(first.envelope, visitor.peer_id, now)
        b.finish_round(train_step(b, 0.0), now)
        sizes.append(len(b.replicas))
    assert max(sizes) <= 100.0 / 5.0 + 1
    assert len(b.replicas) <= 21
    assert len(b.forgotten) == 120 - len(b.replicas)


def test_a_neighbour_back_after_the_horizon_is_mixed_again_after_one_snapshot() -> None:
    a, b = engine(1, max_staleness_s=STALE), engine(2, max_staleness_s=STALE)
    net = Net([a, b])
    net.run(a, a.finish_round(train_step(a, 0.5), 0.0).actions)
    assert b.replicas[a.peer_id].seq == 1
    a.finish_round(train_step(a, 0.5), 50.0)  # seq 2 never reaches b (a disconnected)
    net.now = 150.0
    b.finish_round(train_step(b, 0.0), net.now)
    assert a.peer_id not in b.replicas  # forgotten: not moved on for 150 s > 100 s
    net.run(a, a.finish_round(train_step(a, 0.5), net.now).actions)  # a is back with seq 3
    assert 1 == b.snapshot_requests
    rep = b.replicas[a.peer_id]
    assert (rep.seq, rep.digest) == (3, a.public_digest)
    assert [r.peer for r in b.mixing_candidates(net.now)] == [a.peer_id]


def test_a_forgotten_version_is_refused_as_a_replay_not_revived() -> None:
    """The attack: replay a forgotten neighbour's version 1 (it applies to the common initial model without
    a replica) to bring an old model back into the mix as fresh."""
    a, b = engine(1, max_staleness_s=STALE), engine(2, max_staleness_s=STALE)
    net = Net([a, b])
    first = a.finish_round(train_step(a, 0.5), 0.0).actions
    net.run(a, first)
    net.run(a, a.finish_round(train_step(a, 0.5), 1.0).actions)
    b.finish_round(train_step(b, 0.0), 200.0)
    assert a.peer_id not in b.replicas
    assert isinstance(first[0], Publish)
    assert [] == b.handle_announce(first[0].envelope, a.peer_id, 201.0)
    assert 1 == b.rejections["replay"]
    assert a.peer_id not in b.replicas
    # nor a snapshot of the version we forgot (it would count as fresh)
    b.handle_snapshot(a.serve_snapshot(0), a.peer_id, 202.0)
    assert (1, a.peer_id) == (b.rejections["stale_snapshot"], a.peer_id)
    assert a.peer_id not in b.replicas


def test_the_replay_floors_are_bounded_too() -> None:
    book = ForgottenBook(capacity=3)
    book.remember((f"p{i}", i) for i in range(5))
    assert len(book) == 3
    assert (book.floor("p0"), book.floor("p4")) == (-1, 4)


def test_forget_after_s_below_the_staleness_window_is_refused() -> None:
    with pytest.raises(ConfigError, match="forget_after_s"):
        ProtocolConfig(network_id="t", max_staleness_s=60.0, forget_after_s=30.0)
    assert ProtocolConfig(network_id="t", forget_after_s=600.0).forget_after_s == 600.0
