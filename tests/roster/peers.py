"""Builders for peers of a closed test network (memory or libp2p transport)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from p2pfl.identity import Identity
from p2pfl.peer import Peer, PeerConfig
from p2pfl.roster import Roster, save_roster
from p2pfl.sim.data import Split
from tests.roster.strategies import DAY, closed_roster
from tests.test_peer import learner_for


def ident(i: int) -> Identity:
    return Identity(bytes([i + 1]) * 32)


def wall_ms() -> int:
    return int(time.time() * 1000)


def roster_of(members: list[int], *, version: int = 1, revoked: tuple[int, ...] = (), **kw: Any) -> Roster:
    """A signed roster of network ``net`` listing peers ``members`` (by index) in org ``a``."""
    return closed_roster(
        {ident(i).peer_id: "a" for i in members},
        version=version,
        expires_ms=kw.pop("expires_ms", wall_ms() + DAY),
        revoked=tuple(ident(i).peer_id for i in revoked),
        **kw,
    )


def write_roster(path: Path, roster: Roster) -> Path:
    save_roster(path, roster)
    return path


def closed_peer(i: int, split: Split, transport: Any, roster: Path | None, **cfg: Any) -> Peer:
    """Peer ``i`` of network ``net`` (open when ``roster`` is None)."""
    config = PeerConfig(
        network_id="net",
        status_interval_s=0,
        roster=roster,
        **{"local_steps": 5, "max_round_wait_s": 1.0, "roster_refresh_s": 0.2, **cfg},
    )
    return Peer(config, learner_for(split, i), ident(i), transport=transport)
