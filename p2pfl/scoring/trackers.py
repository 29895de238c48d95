"""The scorer's hooks into the per-neighbour histories of issue 16: persistence, echo and heading.

Split out of :mod:`p2pfl.scoring.scorer` because these trackers remember what a neighbour's *earlier*
versions showed, while the scorer judges the current one: each tracker (:mod:`~p2pfl.scoring.persistence`,
:mod:`~p2pfl.scoring.echo`, :mod:`~p2pfl.scoring.heading`) is told of every version scored, turns its history
into a factor on the neighbour's mixing weight, and forgets it on grace, readmission or departure. Here are
only the hooks, moved as they were: when each tracker may observe (after the founding rounds, outside grace
and probation), and which weight it gives. :class:`TrackerHooks` is a base of
:class:`~p2pfl.scoring.scorer.ContributionScorer`, whose ``__init__`` builds the trackers from its config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from p2pfl.scoring.badrun import DriftTrust
from p2pfl.scoring.config import ScoringConfig
from p2pfl.scoring.echo import Echo, echo, loss_ratio
from p2pfl.scoring.heading import Heading
from p2pfl.scoring.persistence import PersistentDistance, persistently_far
from p2pfl.scoring.standing import PeerState

__all__ = ["TrackerHooks"]


class TrackerHooks:
    """The persistence, echo and heading hooks of :class:`~p2pfl.scoring.scorer.ContributionScorer`."""

    config: ScoringConfig
    #: own rounds begun (the scorer's)
    rounds: int
    #: each neighbour's distance over its last versions (None: persistent_distance off)
    persistence: PersistentDistance | None
    #: each neighbour's last echo of the own update (None: echo off)
    echo: Echo | None
    #: each neighbour's smoothed heading from the centre (None: heading off)
    heading: Heading | None
    #: the neighbours whose gradual drift is data, not poisoning (p2pfl/scoring/badrun.py)
    drift: DriftTrust

    if TYPE_CHECKING:  # the scorer's state of a peer (a default one for an unknown peer)

        def _state(self, peer: str) -> PeerState: ...

    # -- issue 16: persistent distance (p2pfl/scoring/persistence.py) --------------------------------

    def _persistently_far(self, peer: str, state: PeerState, r: float, spread: int) -> bool:
        """Track ``peer``'s ``r`` while it is settled (:func:`~p2pfl.scoring.persistence.persistently_far`):
        established, after the founding rounds, outside grace and probation, with at least
        ``persist_min_spread`` distances (``spread``: the anchors' and the own) setting the median."""
        cfg = self.config
        settled = not (
            state.grace_left > 0
            or spread < cfg.persist_min_spread
            or self.rounds <= cfg.founding_rounds
            or not state.established
            or state.status == "probation"
        )
        return persistently_far(self.persistence, peer, r, settled=settled)

    def _persistence_weight(self, peer: str) -> float:
        return 1.0 if self.persistence is None else self.persistence.weight(peer)

    # -- issue 16: echo of the own update (p2pfl/scoring/echo.py) -----------------------------------------

    def _observe_echo(
        self,
        peer: str,
        model: NDArray[np.float64],
        after: NDArray[np.float64],
        update: NDArray[np.float64],
        *,
        val_losses: Mapping[str, float] | None,
        own_val_loss: float | None,
    ) -> None:
        """Record the echo of ``peer``'s version after the founding rounds (within them every model
        starts from nearly the same place: no evidence), with its loss on the own data over the own."""
        if self.echo is not None:
            settled = self.rounds > self.config.founding_rounds
            ratio = None
            if self.config.use_val_loss and val_losses is not None and peer in val_losses:
                ratio = loss_ratio(float(val_losses[peer]), own_val_loss)
            self.echo.observe(peer, echo(model, after, update) if settled else None, ratio)

    def _echo_weight(self, peer: str) -> float:
        return 1.0 if self.echo is None else self.echo.weight(peer)

    # -- issue 16: heading of the offset from the centre (p2pfl/scoring/heading.py) -----------------------

    def _observe_heading(
        self, own: NDArray[np.float64], sane: Mapping[str, NDArray[np.float64]], scored: list[str]
    ) -> None:
        """Smooth the heading of each version just scored, after the founding rounds (within them the centre
        moves too fast for a heading to mean anything); the established sane models set the centre and the
        spread, as they set the scorer's: new identities cannot frame an established neighbour; neighbours
        that echo or persistence already hold (or the reputation excludes) set neither, so a dissensus model
        aimed at this peer does not drag the centre its honest neighbours' lag is measured against."""
        if self.heading is not None:
            settled = self.rounds > self.config.founding_rounds
            reference = [
                p
                for p in sane
                if self._state(p).established
                and self._state(p).status == "active"
                and self._echo_weight(p) > 0.0
                and self._persistence_weight(p) > 0.0
            ]
            self.heading.observe(own, sane, dict.fromkeys(scored, settled), reference)

    def _heading_weight(self, peer: str) -> float:
        return 1.0 if self.heading is None else self.heading.weight(peer)

    # -- issue 16: drift trust (p2pfl/scoring/badrun.py) ---------------------------------------------------

    def _observe_drift(self, peer: str, state: PeerState, r: float) -> None:
        """Record ``r`` towards ``peer``'s drift trust (settled versions only: established, after the founding
        rounds, outside grace and probation; p2pfl/scoring/badrun.py, ``DriftTrust``)."""
        cfg = self.config
        if cfg.evict_distance:
            settled = (
                state.established
                and state.grace_left == 0
                and state.status != "probation"
                and self.rounds > cfg.founding_rounds
            )
            self.drift.observe(peer, r, cfg.evict_distance, settled=settled)

    def _reset_history(self, peer: str) -> None:
        """Forget what ``peer``'s earlier versions showed (grace, readmission, departure)."""
        self.drift.reset(peer)
        if self.persistence is not None:
            self.persistence.reset(peer)
        if self.echo is not None:
            self.echo.reset(peer)
        if self.heading is not None:
            self.heading.reset(peer)
