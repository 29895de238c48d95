"""Which discovered peers to dial: a pure decision, so the peer's discovery loop only performs it."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from p2pfl.discovery.records import PeerRecord

__all__ = ["select_dials"]


def select_dials(
    records: Iterable[PeerRecord],
    *,
    own_peer_id: str,
    connected: Iterable[str],
    refused: Callable[[str], bool],
) -> list[PeerRecord]:
    """The records worth dialling, in the order given (registries' answers first, then the cache).

    Skipped: ourselves, peers already connected, a second record of a peer already listed, and peers
    ``refused`` says no to (registries, evicted peers, peers the access filter refuses). The caller dials
    them in order and stops once it has enough neighbours: a dial may fail, so every candidate is returned.
    """
    skip = {own_peer_id, *connected}
    chosen: list[PeerRecord] = []
    for record in records:
        pid = record.peer_id
        if pid in skip or refused(pid):
            continue
        skip.add(pid)
        chosen.append(record)
    return chosen
