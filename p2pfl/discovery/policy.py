"""Which discovered peers to dial: a pure decision, so the peer's discovery loop only performs it."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from p2pfl.discovery.records import PeerRecord

__all__ = ["select_dials"]


def select_dials(
    records: Iterable[PeerRecord],
    *,
    own_peer_id: str,
    connected: Iterable[str],
    refused: Callable[[str], bool],
    rng: random.Random,
) -> list[PeerRecord]:
    """The records worth dialling, in an order ``rng`` draws.

    Skipped: ourselves, peers already connected, a second record of a peer already listed (the first
    one, the registries' answer before the cache's, is kept), and peers ``refused`` says no to
    (registries, evicted peers, peers the access filter refuses). The caller dials them in order and
    stops once it has enough neighbours: a dial may fail, so every candidate is returned.

    The order is random because every field a record carries is its signer's to choose: ordered by
    ``seq`` (as the registries' merge sorts) or by peer id (as they page), a member that signs its
    record with the largest ``seq`` or grinds a small key would be the first dial of every peer that
    discovers, and so a neighbour of all of them. Drawn at random, a peer's share of the dials is its
    share of the records.
    """
    skip = {own_peer_id, *connected}
    chosen: list[PeerRecord] = []
    for record in records:
        pid = record.peer_id
        if pid in skip or refused(pid):
            continue
        skip.add(pid)
        chosen.append(record)
    rng.shuffle(chosen)
    return chosen
