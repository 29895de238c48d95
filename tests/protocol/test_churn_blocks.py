"""An identity the engine forgets while banned (past the bound of remembered identities,
p2pfl/protocol/churn.py) is forgotten by the transport too: before, the transport's block list (and the
penalty it keeps) grew with every identity ever evicted, however many the engine had forgotten. Engine:
pure, a fake clock; transport: the in-memory one, driven by the peer's own executor (p2pfl.peer_exchange)."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from p2pfl.peer_exchange import Exchange
from p2pfl.protocol import Action, Forget, GossipEngine
from p2pfl.protocol.churn import QuietBook
from p2pfl.transport.memory import MemoryNetwork, MemoryTransport
from tests.protocol.test_churn import HORIZON, _engine, _publish, _seed

CAPACITY = 2  # remembered identities (MAX_REMEMBERED scaled down)
ATTACKERS = 6  # evicted one after another, each then quiet: more than the victim remembers
BAD_ROUNDS = 3  # absurd versions each attacker sends (evict_after=2: evicted by its second)


def _attack(victim: GossipEngine, execute: list[Sequence[Action]]) -> list[GossipEngine]:
    """Two honest neighbours publish every round; attacker k sends absurd versions in rounds
    ``[k * BAD_ROUNDS, (k + 1) * BAD_ROUNDS)`` and is quiet after; the rounds go on until the last one is
    past the horizon. Every round's readmissions and round actions are appended to ``execute``."""
    honest = [_engine(_seed(2 + j), scoring=False) for j in range(2)]
    bad = [_engine(_seed(50 + k), scoring=False) for k in range(ATTACKERS)]
    for i in range(ATTACKERS * BAD_ROUNDS + int(HORIZON) + 5):
        now = float(i)
        execute.append(victim.readmissions(now))
        for e in honest:
            victim.handle_announce(_publish(e, now, 0.01), e.peer_id, now)
        if i < ATTACKERS * BAD_ROUNDS:
            attacker = bad[i // BAD_ROUNDS]
            victim.handle_announce(_publish(attacker, now, 1e4), attacker.peer_id, now)
        execute.append(victim.finish_round(victim.own_params(), now).actions)
    return bad


def exchange_for(engine: GossipEngine, transport: MemoryTransport, nursery: trio.Nursery) -> Exchange:
    """The peer's exchange between ``engine`` and ``transport``, as a test drives it (nothing to notify)."""
    return Exchange(
        engine,
        lambda: transport,
        lambda: nursery,
        lambda: None,
        max_model_bytes=1 << 20,
        request_timeout_s=1.0,
    )


def _victim() -> GossipEngine:
    victim = _engine(_seed(1), evict_after=2)  # readmit_after_s: 1800 s, far beyond the attack
    victim.quiet = QuietBook(capacity=CAPACITY)
    return victim


def test_a_banned_identity_forgotten_past_the_bound_is_handed_to_the_transport() -> None:
    victim = _victim()
    rounds: list[Sequence[Action]] = []
    bad = _attack(victim, rounds)
    assert all(victim.evictions_of(b.peer_id) == 0 for b in bad[: ATTACKERS - CAPACITY])  # forgotten
    assert all(victim.is_evicted(b.peer_id) for b in bad[ATTACKERS - CAPACITY :])  # remembered, banned
    rounds.append(victim.readmissions(float(len(rounds))))
    forgotten = [a.peer for acts in rounds for a in acts if isinstance(a, Forget)]
    assert sorted(forgotten) == sorted(b.peer_id for b in bad[: ATTACKERS - CAPACITY])


def test_the_transport_keeps_no_block_of_an_identity_the_engine_forgot() -> None:
    victim = _victim()
    rounds: list[Sequence[Action]] = []
    bad = _attack(victim, rounds)
    rounds.append(victim.readmissions(float(len(rounds))))

    async def main() -> MemoryTransport:
        async with trio.open_nursery() as nursery, MemoryNetwork().open(network_id="t", peer_id="v") as t:
            exchange = exchange_for(victim, t, nursery)
            for actions in rounds:
                await exchange.execute(actions)
            return t

    t = trio.run(main)
    refused = [b.peer_id for b in bad if not t._peer_allowed(b.peer_id)]
    assert refused == [b.peer_id for b in bad[ATTACKERS - CAPACITY :]]  # only those the engine still bans
    assert [b.peer_id for b in bad if t.peer_score(b.peer_id) != 0.0] == refused
