"""Per-identity state stays bounded under identity churn (p2pfl/protocol/churn.py), and a forgotten identity
that returns gets no more than a new one; evicted ones stay remembered, bounded. Pure: a fake clock."""

from __future__ import annotations

import numpy as np

from p2pfl.aggregation import AggregationConfig
from p2pfl.identity import Identity
from p2pfl.protocol import GossipEngine, ProtocolConfig, Publish
from p2pfl.protocol.churn import MAX_REMEMBERED, QuietBook, count_rejection, identity_tables
from p2pfl.scoring import ScoringConfig
from p2pfl.tokenbucket import Buckets
from tests.protocol.test_engine import model

STALE = 10.0
HORIZON = 30.0  # forget_after_s
PERIOD = 1.0  # one own round (and one new attacker identity) per fake second
HONEST = 3


def _engine(seed: bytes, *, scoring: bool = True, **cfg: object) -> GossipEngine:
    return GossipEngine(
        Identity(seed),
        ProtocolConfig(network_id="t", max_staleness_s=STALE, forget_after_s=HORIZON),
        model(),
        aggregation=AggregationConfig(rule="mean", nnm=False, self_clip_scale=None),
        scoring=ScoringConfig(**cfg),  # type: ignore[arg-type]
        scoring_enabled=scoring,
    )


def _seed(i: int) -> bytes:
    return i.to_bytes(4, "big") * 8


def _publish(e: GossipEngine, now: float, delta: float | np.ndarray) -> bytes:
    trained = {k: v + np.float32(delta) for k, v in e.own_params().items()} if np.isscalar(delta) else delta
    act = e.finish_round(trained, now).actions[0]  # type: ignore[arg-type]
    assert isinstance(act, Publish)
    return act.envelope


def _found(victim: GossipEngine, peers: list[GossipEngine], rounds: int = 3) -> None:
    """``peers`` publish small updates for ``rounds`` of the victim's first rounds: they become founders."""
    for i in range(rounds):
        for e in peers:
            victim.handle_announce(_publish(e, float(i), 0.01), e.peer_id, float(i))
        victim.finish_round(victim.own_params(), float(i))


def _evict(victim: GossipEngine, honest: list[GossipEngine], bad: GossipEngine, rounds: int = 4) -> float:
    """``honest`` publish small updates, ``bad`` absurd ones, for ``rounds`` rounds; returns the last time."""
    now = 0.0
    for i in range(rounds):
        now = float(i)
        for e in honest:
            victim.handle_announce(_publish(e, now, 0.01), e.peer_id, now)
        victim.handle_announce(_publish(bad, now, 1e4), bad.peer_id, now)
        victim.finish_round(victim.own_params(), now)
    return now


def _honest_ids() -> list[str]:
    return [Identity(_seed(1000 + j)).peer_id for j in range(HONEST)]


def _rotating_attack(victim: GossipEngine, rounds: int, rng: np.random.Generator) -> list[dict[str, int]]:
    """Three honest neighbours publish every few rounds (well within the horizon); an attacker signs with a
    new key every round, each identity publishing one version (every other one absurd, so it is remembered)
    relayed through a new forwarder, then a replay of the previous identity's version; the victim runs a
    round each second."""
    honest = [_engine(_seed(1000 + j), scoring=False) for j in range(HONEST)]
    sizes = []
    previous: bytes | None = None
    for i in range(rounds):
        now = i * PERIOD
        for h in honest if i % 5 == 0 else ():
            victim.handle_announce(_publish(h, now, 0.005), h.peer_id, now)
        attacker = _engine(_seed(10 + i), scoring=False)
        env = _publish(attacker, now, 1e4 if i % 2 else float(rng.normal(0, 0.01)))
        victim.handle_announce(env, f"relay-{i}", now)
        if previous is not None:
            victim.handle_announce(previous, f"relay-{i}", now)  # a replay: counted against the sender
        previous = env
        victim.finish_round({k: v + np.float32(0.001) for k, v in victim.own_params().items()}, now)
        sizes.append(identity_tables(victim))
    return sizes


def test_an_identity_rotating_attacker_grows_no_table_past_its_bound() -> None:
    """The documented bound (p2pfl.protocol.churn): the live identities are those heard within the horizon
    (HORIZON / PERIOD attacker identities plus the honest neighbours); the remembered ones (worse than new)
    at most the QuietBook's capacity, here 50 so that 1,000 rounds overflow it."""
    victim = _engine(_seed(1))
    victim.quiet = QuietBook(capacity=50)
    sizes = _rotating_attack(victim, 1000, np.random.default_rng(0))
    live = HONEST + HORIZON / PERIOD + 2
    for row in sizes:
        assert row["replicas"] <= live
        assert row["quiet"] <= 50
        for table in ("scorer", "heard_at", "last_scored", "doubted", "bans"):
            assert row[table] <= live + 50, (table, row)
        assert row["scorer_history"] <= 3 * (live + 50)
        assert row["rejections_by_peer"] <= 1024
        assert row["headers"] <= 1024
        # a refilled bucket is dropped: the relays and senders of the last burst / rate seconds only
        assert row["rate_relay"] <= 600 / 200 / PERIOD + HONEST + 2
        assert row["rate_sender"] <= 60 / 20 / PERIOD + HONEST + 2
    assert sizes[-1]["quiet"] == 50  # the absurd identities filled it: remembered, up to the bound
    assert victim.rejections["duplicate"] + victim.duplicates >= 900  # the replays, refused
    assert not any(victim.is_evicted(h) for h in _honest_ids())


def test_without_forgetting_the_tables_grow_with_every_identity() -> None:
    """The same attack without forgetting (the horizon never reached): the tables grow with the identities,
    which is what the bound above prevents."""
    victim = _engine(_seed(1))
    victim.config = ProtocolConfig(network_id="t", max_staleness_s=STALE, forget_after_s=1e9)
    sizes = _rotating_attack(victim, 120, np.random.default_rng(1))
    assert sizes[-1]["scorer"] >= 120


def test_a_forgotten_identity_that_returns_is_a_new_one() -> None:
    """A founder that went quiet past the horizon comes back young, not a founder: no more than a new
    identity (it re-earns its weight), and its record of good behaviour is gone with it."""
    victim = _engine(_seed(1))
    founder = _engine(_seed(2))
    others = [_engine(_seed(3 + j)) for j in range(2)]
    _found(victim, [founder, *others])
    scorer = victim.scorer
    assert scorer is not None
    assert scorer.is_founder(founder.peer_id) and founder.peer_id in scorer.known()
    now = 3.0
    for i in range(int(HORIZON) + 5):  # the founder is silent; the others keep publishing
        now = 3.0 + i
        for e in others:
            victim.handle_announce(_publish(e, now, 0.01), e.peer_id, now)
        victim.finish_round(victim.own_params(), now)
    assert founder.peer_id not in victim.replicas
    assert founder.peer_id not in scorer.known()
    newcomer = _engine(_seed(99))
    for e in (founder, newcomer):
        victim.handle_announce(_publish(e, now, 0.01), e.peer_id, now)
    victim.finish_round(victim.own_params(), now + 1)
    for p in (founder.peer_id, newcomer.peer_id):
        assert not scorer.is_founder(p)
        assert scorer.status(p) == "young"
    assert scorer.influence_cap(founder.peer_id) <= scorer.influence_cap(newcomer.peer_id)


def test_an_evicted_identity_stays_remembered_after_it_goes_quiet() -> None:
    """Going quiet must not launder an eviction: the ban, its count and the scorer's record stay (bounded by
    the QuietBook), so the identity is still refused, and a repeat eviction would last twice as long."""
    victim = _engine(_seed(1), evict_after=2)
    honest = [_engine(_seed(2 + j)) for j in range(3)]
    bad = _engine(_seed(50))
    now = _evict(victim, honest, bad)
    assert victim.is_evicted(bad.peer_id)
    for _ in range(int(HORIZON) * 2):
        now += 1.0
        for e in honest:
            victim.handle_announce(_publish(e, now, 0.01), e.peer_id, now)
        victim.finish_round(victim.own_params(), now)
    assert bad.peer_id in victim.quiet
    assert victim.is_evicted(bad.peer_id)
    assert victim.evictions_of(bad.peer_id) == 1
    assert victim.handle_announce(_publish(bad, now, 0.0), bad.peer_id, now) == []
    assert victim.rejections_by_peer[bad.peer_id]["evicted"] >= 1


def test_a_good_record_gone_quiet_is_forgotten_not_remembered() -> None:
    victim = _engine(_seed(1))
    e = _engine(_seed(2))
    victim.handle_announce(_publish(e, 0.0, 0.01), e.peer_id, 0.0)
    victim.finish_round(victim.own_params(), 0.0)
    victim.finish_round(victim.own_params(), HORIZON + 1)
    assert identity_tables(victim)["scorer"] == 0 and len(victim.quiet) == 0


def test_quiet_book_drops_the_longest_quiet_first() -> None:
    book = QuietBook(capacity=2)
    assert book.add("a", 0.0) == [] and book.add("b", 1.0) == []
    assert book.add("c", 2.0) == ["a"]
    assert "a" not in book and "c" in book and len(book) == 2
    assert MAX_REMEMBERED >= 1024


def test_rejection_counts_keep_the_most_recently_rejected_identities() -> None:
    table: dict = {}
    for i in range(10):
        count_rejection(table, f"p{i}", "bad", capacity=4)
    count_rejection(table, "p6", "bad", capacity=4)  # touched: kept over p7
    count_rejection(table, "new", "bad", capacity=4)
    assert list(table) == ["p8", "p9", "p6", "new"]
    assert table["p6"]["bad"] == 2


def test_a_refilled_bucket_is_dropped_and_a_drained_one_kept() -> None:
    b = Buckets(rate=1.0, burst=3.0, max_keys=100)
    for _ in range(3):
        assert b.take("drained", 0.0)
    assert b.take("one", 0.0)
    assert b.prune(1.0) == 1  # "one" has refilled to 3; "drained" holds 1
    assert len(b) == 1 and b.peek("drained", 1.0)
    assert b.prune(3.0) == 1 and len(b) == 0
