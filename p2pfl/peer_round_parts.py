"""What the round loop is given and what it gives back: its parts of the peer, its knobs and its reports.

Split out of :mod:`p2pfl.peer_rounds` because these are values, read by the peer, the metrics, the logs and
the simulations, while the loop itself is behaviour: :class:`RoundParts` (what
:class:`~p2pfl.peer_rounds.RoundLoop` uses of its :class:`~p2pfl.peer.Peer`), :class:`RoundReport` (what one
round did), :class:`PrivateRelease` (what differential privacy decided for one), and the pacing and guard
knobs derived from the peer's config. :mod:`p2pfl.peer_rounds` and :mod:`p2pfl.peer` re-export them.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import trio

from p2pfl.config.schema import derive
from p2pfl.learner import Learner
from p2pfl.peer_exchange import Exchange
from p2pfl.peer_store import PeerStore
from p2pfl.protocol import GossipEngine, RoundOutcome
from p2pfl.protocol.guards import GuardConfig
from p2pfl.protocol.pacing import PacingConfig
from p2pfl.transport.base import Transport
from p2pfl.wire import DPClaim, Meta

if TYPE_CHECKING:
    from p2pfl.config.schema import PeerConfig
    from p2pfl.privacy import PeerPrivacy
    from p2pfl.rollout import Rollout
    from p2pfl.secagg.runtime import GroupMember

__all__ = [
    "SUBSCRIBE_GRACE_S",
    "Params",
    "PrivateRelease",
    "RoundParts",
    "RoundReport",
    "RunSync",
    "guard_config",
    "pacing_config",
]

#: How long a connected peer may take to subscribe to our announcements before it is taken for a non-learner
#: (a bootstrap registry never subscribes). Gossipsub carries a subscription in its first RPC; the topic sync
#: runs every second.
SUBSCRIBE_GRACE_S = 3.0

Params = dict[str, npt.NDArray[np.float32]]
#: how a peer runs blocking work (``trio.to_thread.run_sync`` unless a test runs it inline)
RunSync = Callable[..., Awaitable[Any]]


@dataclass
class RoundReport:
    """What one round did, for status lines, simulations and tests."""

    round: int
    seq: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    neighbours: int
    mixed: int
    evicted: list[str]
    rolled_back: bool
    duration_s: float
    #: the mix failed the own-data guard (``mix_guard_margin``): the round kept the trained model
    mix_refused: bool = False
    #: the round published a version (false once the privacy budget is spent)
    published: bool = True
    #: differential privacy: epsilon spent after this round (``None``: DP off)
    privacy_epsilon: float | None = None


@dataclass(frozen=True)
class PrivateRelease:
    """What differential privacy decided for one round (see ``RoundLoop._private_release``)."""

    publish: bool
    #: the model to publish instead of the trained one (peer level: noised), or None
    published: Params | None
    claim: DPClaim | None
    #: epsilon spent once this round is over
    epsilon_after: float
    #: the first round the budget stopped: the version log's reason
    note: str | None

    def meta(self, round_: int) -> Meta:
        """The header's meta under DP: the round only (the training loss and the sample count are functions
        of the private data that no noise covers)."""
        return Meta(round=round_)

    def engine_args(self) -> dict[str, Any]:
        return {"publish": self.publish, "published": self.published, "dp": self.claim}


def pacing_config(config: PeerConfig) -> PacingConfig:
    """The round pacing's knobs of ``config`` (its fields of the same names)."""
    # several mixing steps per round publish, then wait, then mix, each step (p2pfl.protocol.mixing): the
    # trained model's mix too, so that it takes the neighbours' trained models of the same round. Not under
    # DP: its release is decided with the mix, so it cannot publish first, and it keeps the old order's wait
    # before training (with the same-round order on, a DP peer waited nowhere: its rounds ran at once)
    wait_before_mix = (config.wait_before_mix or config.mix_steps > 1) and not config.privacy.enabled
    return derive(PacingConfig, config, subscribe_grace_s=SUBSCRIBE_GRACE_S, wait_before_mix=wait_before_mix)


def guard_config(config: PeerConfig) -> GuardConfig:
    """The own-data guards' knobs of ``config`` (its fields of the same names)."""
    return derive(GuardConfig, config)


@dataclass
class RoundParts:
    """What the round loop uses of its peer: the shared parts, and callables for what the peer owns."""

    config: PeerConfig
    engine: GossipEngine
    learner: Learner
    store: PeerStore
    exchange: Exchange
    run_sync: RunSync
    #: the connected learning neighbours (``Peer.neighbours``)
    neighbours: Callable[[], list[str]]
    #: the running transport (raises when the peer is not running)
    transport: Callable[[], Transport]
    #: writes ``status.json`` (``Peer.write_status``)
    write_status: Callable[[], Awaitable[None]]
    #: set by ``Peer.stop`` and on leaving the peer
    stopped: trio.Event
    #: told of each finished round (``Peer``: the round's log event and metrics; must not raise)
    on_round: Callable[[RoundReport], None] | None = None
    #: quality deltas and the serving version (p2pfl.rollout); ``None``: versions get no quality metrics
    rollout: Rollout | None = None
    #: this peer's secure-aggregation group (p2pfl.secagg; ``Peer.secagg``), looked up each round
    secagg: Callable[[], GroupMember | None] = lambda: None
    #: differential privacy (p2pfl.privacy); ``None``: off
    privacy: PeerPrivacy | None = None
    #: link rotation after a round (``LinkRotation.after_round``); ``None``: off
    rotate: Callable[[int], Awaitable[None]] | None = None

    async def persist(
        self,
        round_: int,
        outcome: RoundOutcome,
        metrics: dict[str, float],
        notes: Sequence[tuple[str, str]] = (),
        *,
        extra: Sequence[Mapping[str, Any]] = (),
        version: bool = True,
    ) -> None:
        """``PeerStore.persist`` in a worker thread, with the engine's ban records taken here, on trio's
        clock (a worker thread has none), and only when a state directory keeps them."""
        now = trio.current_time()
        bans = self.engine.ban_snapshot(now) if self.store.directory is not None else ()
        persist = functools.partial(self.store.persist, extra=extra, version=version, bans=bans)
        await self.run_sync(persist, self.engine, round_, outcome, metrics, notes)
