"""select_dials: which discovered peers a peer dials (pure; the peer performs the dials)."""

from __future__ import annotations

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
        records, own_peer_id=ME, connected=[PEERS[1].peer_id], refused=lambda p: p == PEERS[4].peer_id
    )
    assert [PEERS[3].peer_id, PEERS[2].peer_id, PEERS[5].peer_id] == [r.peer_id for r in chosen]
    assert records[0] is chosen[0]  # the first record of a peer (the registries' answer) is the one dialled


@given(
    order=st.permutations(RECORDS),
    connected=st.sets(st.sampled_from([p.peer_id for p in PEERS])),
    refused=st.sets(st.sampled_from([p.peer_id for p in PEERS])),
)
def test_every_allowed_unconnected_peer_is_dialled_once_in_order(
    order: list[PeerRecord], connected: set[str], refused: set[str]
) -> None:
    chosen = select_dials(order, own_peer_id=ME, connected=connected, refused=refused.__contains__)
    ids = [r.peer_id for r in chosen]
    expected = dict.fromkeys(r.peer_id for r in order if r.peer_id not in connected | refused | {ME})
    assert list(expected) == ids
    positions = [next(i for i, r in enumerate(order) if r is c) for c in chosen]
    assert sorted(positions) == positions
