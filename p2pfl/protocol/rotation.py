"""Link rotation: every ``every`` rounds a peer drops its oldest links and dials peers it is not linked to.

Why. On a sparse static graph a peer is stuck with the neighbours it started with. Two things follow, and
no aggregation rule fixes either (docs/learning.md, "Link rotation"):

* a peer with half or more of its neighbours attacking (an *exposed* peer) is outvoted by the robust rule
  every round, for the whole run: the rule's breakdown point is about fractions, and that peer's fraction
  is a majority whatever the network's is;
* on very non-IID data a peer's model only ever mixes with the same few data distributions, and the
  information of the far side of the graph reaches it through many averaging steps.

Rotation makes the graph time-varying: over a few rotations every peer's neighbourhood is a fresh sample
of the network, so the attackers' share in it tends to their share of the network, and models mix across
the whole network as on a denser graph (decentralised SGD on time-varying graphs, Koloskova et al. 2020;
Epidemic Learning, de Vos et al. 2023). The degree, i.e. the bandwidth, stays what it was.

Pure: the caller passes its links with the round each was made, the candidates and a generator.
Pinned links (static peers) are never dropped. The caller dials first, candidates in the order given,
until ``want`` answered (one more link than ``degree``, or up to it when below); then it closes its oldest
links until it is back to ``degree`` (:meth:`Rotation.to_drop`). A dial that fails therefore never costs a
link: a peer with nobody new to reach keeps the neighbours it has. A link dialled by a neighbour counts like
any other, so degrees stay near the target rather than exactly at it. Between rotations the caller tops its
links up to ``degree`` (``turn = False``) after any round that ended below it: neighbours' rotations close
links to it, and a peer left with one or two neighbours on very non-IID data drifts towards its own
classes (measured: without the top-up, honest minimum accuracy on 4-regular graphs at Dirichlet 0.1 fell
below the static graph's in some runs; docs/learning.md, "Link rotation").

A link that ends rests (:class:`Rest`): for ``cooldown`` rounds the peer neither dials that peer nor accepts
a link from it, whichever end closed it (:meth:`~p2pfl.peer_rotation.LinkRotation.note_links`). Without the
rest an attacker that knows the rule beats rotation: it re-dials every peer that closes its link, comes back
as that peer's *youngest* link, and is never the oldest when the next rotation closes one, so it stays
linked nearly every round. With a rest of one link lifetime (``every * degree`` rounds, the time a link
takes to become the oldest) such an attacker holds about the share of the links it holds without
re-dialling (measured: docs/learning.md, "The rest of a closed link").
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from p2pfl.errors import ConfigError


@dataclass(frozen=True)
class Rotation:
    """One rotation's decision: dial ``dial`` in order until ``want`` answered, then close
    :meth:`to_drop` of the dialled count."""

    dial: tuple[str, ...] = ()
    want: int = 0
    #: the links that may be closed, oldest first (pinned ones are not among them)
    oldest: tuple[str, ...] = ()
    #: the links held when the decision was made
    held: int = 0
    degree: int = 1

    def to_drop(self, dialled: int) -> tuple[str, ...]:
        """The links to close once ``dialled`` new ones were made: back to ``degree``, oldest first."""
        return self.oldest[: max(0, self.held + dialled - self.degree)]


NONE = Rotation()

#: the most rests kept; past it the one that ends first goes (a peer's links end at about one per rotation,
#: its own and its neighbours' closes, so a rest of a few link lifetimes holds a few dozen)
MAX_RESTS = 4096


class Rest:
    """The peers whose links ended, each refused until a round (see the module docstring). Pure: the caller
    passes its round."""

    def __init__(self, rounds: int) -> None:
        if rounds < 0:
            raise ConfigError("peer", "rotate_cooldown", f"must be >= 0, got {rounds}")
        #: how many of this peer's rounds an ended link rests; 0: off
        self.rounds = rounds
        self._until: dict[str, int] = {}

    def start(self, peer: str, round_: int) -> None:
        """``peer``'s link ended at round ``round_``: refuse it until round ``round_ + rounds`` ends."""
        if not self.rounds:
            return
        self._until[peer] = round_ + self.rounds
        if len(self._until) > MAX_RESTS:
            del self._until[min(self._until, key=self._until.__getitem__)]

    def resting(self, peer: str, round_: int) -> bool:
        """Whether ``peer`` is refused at round ``round_`` (a dial either way, and its messages pass)."""
        until = self._until.get(peer)
        if until is None:
            return False
        if round_ > until:
            del self._until[peer]
            return False
        return True

    def __len__(self) -> int:
        return len(self._until)


def due(round_: int, every: int) -> bool:
    """Whether the rotation runs after the peer's round ``round_`` (never before the first round ends)."""
    return every > 0 and round_ > 0 and round_ % every == 0


def rotate(
    links: Mapping[str, int],
    candidates: Sequence[str],
    *,
    degree: int,
    rng: random.Random,
    pinned: Collection[str] = (),
    turn: bool = True,
) -> Rotation:
    """What to dial and what may be closed (see the module docstring). ``turn = False``: only top the links
    up to ``degree`` (between rotations, after neighbours closed links to this peer), closing none.

    ``links``: the peer's learning links, each with the round it was made. ``candidates``: peers of the
    network it may dial (the caller has removed itself, evicted and refused peers). Ties among equally old
    links are broken by ``rng``; the candidates are shuffled by it.
    """
    if degree < 1:
        raise ConfigError("peer", "rotate_degree", f"must be >= 1 here, got {degree}")
    free = [p for p in links if p not in pinned]
    rng.shuffle(free)  # ties among equally old links: random
    free.sort(key=lambda p: links[p])  # stable: oldest first
    pool = [c for c in dict.fromkeys(candidates) if c not in links]
    rng.shuffle(pool)
    if not turn:
        free = []
    # one link more than the degree when one can be closed afterwards (the rotation), else up to the degree
    want = max(0, degree + (1 if free else 0) - len(links))
    if not pool or want == 0:
        return Rotation(oldest=tuple(free), held=len(links), degree=degree)
    return Rotation(dial=tuple(pool), want=want, oldest=tuple(free), held=len(links), degree=degree)
