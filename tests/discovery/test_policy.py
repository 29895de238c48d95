"""select_dials: which discovered peers a peer dials (pure; the peer performs the dials)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from p2pfl.discovery import PeerRecord
from p2pfl.discovery.policy import select_dials
from p2pfl.identity import Identity

PEERS = [Identity(bytes([i]) * 32) for i in range(1, 7)]
ME = PEERS[0].peer_id


def rec(i: int, seq: int = 1_700_000_000_000) -> PeerRecord:
    return PeerRecord.create(PEERS[i], "n", [f"/ip4/127.0.0.1/tcp/{4000 + i}"], seq=seq)


RECORDS = [rec(i, seq) for i in range(6) for seq in (1_700_000_000_000, 1_700_000_000_001)]


def test_skips_ourselves_the_connected_the_refused_and_repeats_in_order() -> None:
    records = [rec(3), rec(0), rec(1), rec(2), rec(3, seq=1_700_000_000_005), rec(4), rec(5)]
    chosen = select_dials(
        records,
        own_peer_id=ME,
        connected=[PEERS[1].peer_id],
        refused=lambda p: p == PEERS[4].peer_id,
        rng=random.Random(1),
    )
    assert {PEERS[3].peer_id, PEERS[2].peer_id, PEERS[5].peer_id} == {r.peer_id for r in chosen}
    assert len(chosen) == 3
    assert records[0] in chosen  # the first record of a peer (the registries' answer) is the one dialled


@given(
    order=st.permutations(RECORDS),
    connected=st.sets(st.sampled_from([p.peer_id for p in PEERS])),
    refused=st.sets(st.sampled_from([p.peer_id for p in PEERS])),
    seed=st.integers(0, 2**32),
)
def test_every_allowed_unconnected_peer_is_dialled_once_by_its_first_record(
    order: list[PeerRecord], connected: set[str], refused: set[str], seed: int
) -> None:
    chosen = select_dials(
        order, own_peer_id=ME, connected=connected, refused=refused.__contains__, rng=random.Random(seed)
    )
    ids = [r.peer_id for r in chosen]
    expected = {r.peer_id for r in order if r.peer_id not in connected | refused | {ME}}
    assert sorted(expected) == sorted(ids)
    for record in chosen:
        assert record is next(r for r in order if r.peer_id == record.peer_id)


def test_a_record_signed_to_sort_first_is_not_dialled_first_more_than_its_share() -> None:
    """The attack on an ordered dial list: a member signs its record with the largest ``seq`` and a
    ground-down small peer id, and comes first in the registries' answer. Over many discoveries it is
    still the first dial only about as often as any of the five candidates."""
    attacker = PeerRecord.create(PEERS[5], "n", ["/ip4/127.0.0.1/tcp/4005"], seq=2**64 - 1)
    records = [attacker] + [rec(i) for i in range(1, 5)]
    rng = random.Random(7)
    trials = 2000
    firsts = sum(
        select_dials(records, own_peer_id=ME, connected=(), refused=lambda p: False, rng=rng)[0] is attacker
        for _ in range(trials)
    )
    assert 0.15 < firsts / trials < 0.25  # 1 of 5 candidates; ordered by the answer it was 1.0
