"""The join as the peer runs it (p2pfl.peer_exchange.Exchange.fetch_snapshots): the plan of
p2pfl.protocol.join against a fake transport on a mock clock, the engine telling which snapshots are
usable."""

from __future__ import annotations

import numpy as np
import trio
import trio.testing

from p2pfl.errors import TransportError
from p2pfl.identity import Identity
from p2pfl.peer_exchange import Exchange
from p2pfl.protocol import GossipEngine, ProtocolConfig
from p2pfl.protocol.join import JoinPlan
from tests.protocol.test_engine import engine, model


class LosesFirstRequest:
    """Serves each peer's snapshot; the first request to ``lost`` fails, as one lost to a resync does."""

    def __init__(self, snapshots: dict[str, bytes], lost: str) -> None:
        self.snapshots = snapshots
        self.lost = lost
        self.asked: list[str] = []

    def connected_peers(self) -> list[str]:
        return list(self.snapshots)

    async def request(self, peer: str, protocol: str, body: bytes, **_: object) -> bytes:
        self.asked.append(peer)
        await trio.sleep(0.1)
        if peer == self.lost and self.asked.count(peer) == 1:
            raise TransportError("connection closed by a resync")
        return self.snapshots[peer]


def test_a_refused_snapshot_does_not_end_the_join_before_a_lost_request_is_asked_again() -> None:
    """Quorum 2 of three learners: one good, one of another architecture (refused: wrong_arch), one whose
    first request is lost. Counting the refused one, the join ended after the first attempt with one usable
    snapshot and the newcomer kept its own model; now it asks the lost one again and adopts the median."""
    good, lost = engine(1), engine(2)
    good.finish_round(model(1.0), 1)
    lost.finish_round(model(3.0), 1)
    odd = GossipEngine(
        Identity(bytes([4]) * 32), ProtocolConfig(network_id="t"), {"z": np.zeros(2, np.float32)}
    )
    odd.finish_round({"z": np.ones(2, np.float32)}, 1)
    snaps = {e.peer_id: e.serve_snapshot(0) for e in (good, odd, lost)}
    transport = LosesFirstRequest(snaps, lost.peer_id)
    newcomer = engine(9, join_quorum=2)

    async def main() -> dict[str, bytes]:
        exchange = Exchange(
            newcomer,
            lambda: transport,  # type: ignore[arg-type,return-value]
            lambda: None,  # type: ignore[arg-type,return-value]
            lambda: None,
            max_model_bytes=1 << 20,
            request_timeout_s=5.0,
        )
        plan = JoinPlan(quorum=2, timeout_s=30.0, request_timeout_s=5.0, adopt=True, started_at=0.0)
        return await exchange.fetch_snapshots(plan, transport.connected_peers)

    got = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert sorted(transport.asked) == sorted([good.peer_id, odd.peer_id, lost.peer_id, lost.peer_id])
    assert 2 == newcomer.join_from_snapshots(got, 1.0)
    assert np.allclose(newcomer.own, 2.0)  # the median of 1.0 and 3.0
    assert 1 == newcomer.rejections["wrong_arch"]
