"""Whose models set the yardsticks of one evaluation: the spread, the loss reference and their eviction forms.

Split out of :mod:`p2pfl.scoring.scorer` because this is the one place that decides *who calibrates*: the
defence against a crowd of new identities lives in the choice of anchors, not in how a neighbour is then
scored against them (:mod:`~p2pfl.scoring.components`) nor in what its score does to its standing (the
scorer). Pure: the scorer passes each identity's state in.

The spread (the median distance from the centre) is the founders' and the own model's while at least two
founders are candidates, else the established neighbours', else (a peer whose every neighbour is new) every
sane neighbour's. Of exactly two founders the peer cannot tell which one is honest: the references take the
closer one, and an eviction must also hold against the farther one (``med_evict``, ``loss_evict``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from p2pfl.scoring.copies import distinct
from p2pfl.scoring.losses import LossTolerance
from p2pfl.scoring.standing import PeerState

__all__ = ["References", "references"]


@dataclass(frozen=True)
class References:
    """The yardsticks of one evaluation (see the module doc)."""

    #: the neighbours whose distances (with the own model's) set the median and the loss tolerance
    anchors: list[str]
    #: the median distance from the centre of the anchors and the own trained model
    med: float
    #: the loss a neighbour's own-data loss is judged against (``None``: no loss component)
    loss_ref: float | None
    #: the references a bad score must also fail to count towards eviction (two founders: the farther one)
    med_evict: float
    loss_evict: float | None
    #: a young identity is near enough when no farther from the centre than a trusted founder is
    reach: float


def references(
    tolerance: LossTolerance,
    rounds: int,
    state_of: Callable[[str], PeerState],
    *,
    after: NDArray[np.float64],
    centre: NDArray[np.float64],
    sane: Sequence[str],
    dists: Mapping[str, float],
    val_losses: Mapping[str, float] | None,
    own_val_loss: float | None,
    groups: Mapping[str, str] | None = None,
) -> References:
    """The yardsticks for the ``sane`` neighbours at distances ``dists`` from ``centre`` (updates the loss
    tolerance's calibration, see :class:`~p2pfl.scoring.losses.LossTolerance`). ``groups``
    (:func:`~p2pfl.scoring.copies.copy_groups`): copies of one model are one anchor."""
    # The spread is the founders' (and the own model's) while at least two founders are candidates, else
    # the established neighbours': a crowd of new identities can neither widen it nor narrow it, nor can
    # identities that earned their standing while founders are around (one founder alone would set it
    # by its own distance). While none is established (a peer whose every neighbour is new) every sane
    # neighbour sets it, as before earned influence.
    # (neighbours the own checks already distrust, reputation below ``exclude_below``, calibrate nothing)
    trusted = [p for p in sane if state_of(p).status == "active"]
    founders = [p for p in trusted if state_of(p).founder]
    anchors = (
        founders if len(founders) >= 2 else [p for p in trusted if state_of(p).established] or list(sane)
    )
    anchors = distinct(anchors, groups or {})  # copies count once (p2pfl/scoring/copies.py)
    med = float(np.median([*(dists[p] for p in anchors), float(np.linalg.norm(after - centre))]))
    loss_ref = tolerance.reference(rounds, anchors, val_losses, own_val_loss)
    # Of exactly two founders the peer cannot tell which one is honest (every sane one counts here,
    # trusted or not: one kept out of the mix still speaks for its data). The references above take the
    # closer one, so a sign-flipper beside an honest founder scores 0 and stays out of the mix; a bad
    # score counts towards eviction (a ban) only if it is bad against the farther one too.
    pair = [p for p in sane if state_of(p).founder]
    med_evict, loss_evict = med, loss_ref
    if len(pair) == 2:
        med_evict = max(med, *(dists[p] for p in pair))
        loss_evict = tolerance.eviction_reference(pair, val_losses, loss_ref)
    # a young identity is near enough when no farther from the centre than a trusted founder is (with
    # few founders of similar data the spread is narrow, and honest newcomers with other data sat at
    # r 2-5 in the default scenario when only two peers were founders)
    reach = max((dists[p] for p in founders), default=0.0)
    return References(anchors, med, loss_ref, med_evict, loss_evict, reach)
