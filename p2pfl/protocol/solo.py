"""A peer with no neighbour in its mixes ("solo"): visible, and not left to drift on its own data for ever.

A round is *solo* when its mix took no neighbour's model: no neighbour connected, every one evicted, stale
or silent (a secure-aggregation round, whose mean stands for the group, is not solo). A solo round is plain
local training: on non-IID data the model drifts towards the own classes and away from the network it is
meant to join, while status, metrics and the version log look like ordinary progress.

What a production user expects, and what the peer does (``[peer] solo_rounds``, default 10):

* every solo round is *marked*: ``status.json`` has ``"solo": {"rounds": n, "paused": ...}``, the metrics
  a ``p2pfl_solo_rounds`` gauge, and the first solo round logs one warning line;
* after ``solo_rounds`` solo rounds in a row the peer *pauses* (one warning line saying so and how to turn
  it off): it runs no round until a neighbour's version arrives, and then one round per new neighbour
  version, so it never runs ahead on its own data while still learning from whatever reaches it. It
  still serves its model, and keeps forgetting idle identities meanwhile;
* a paused peer also asks its connected neighbours for what it lacks (``GossipEngine.renewals``): a
  neighbour that finished its rounds and only serves publishes nothing more, yet its model may be one the
  pause never mixed (its replica had gone stale, or the restart brought none). Its snapshot makes that
  version mixable again, and a version mixable now that the last mix did not take wakes the peer
  (:func:`woken`): once per version, or per renewal of a replica that went stale, never per answer
  (an answer confirming a version the last mix took is no news), so no replay and no neighbour can keep
  a paused peer running solo rounds;
* the first round that mixes a neighbour again ends it (one info line, counters back to 0).

``solo_rounds = 0`` never pauses (a deliberately single peer, e.g. a local test, trains on; its rounds are
still marked solo). Pure: the caller reports each round's mixed-neighbour count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from p2pfl.errors import ConfigError

#: the default number of solo rounds in a row after which a peer pauses
SOLO_ROUNDS = 10

SoloEvent = Literal["solo", "paused", "rejoined"]


@dataclass(frozen=True)
class SoloConfig:
    """``pause_after``: solo rounds in a row before the peer pauses (0: never)."""

    pause_after: int = SOLO_ROUNDS

    def __post_init__(self) -> None:
        if (
            isinstance(self.pause_after, bool)
            or not isinstance(self.pause_after, int)
            or self.pause_after < 0
        ):
            raise ConfigError("peer", "solo_rounds", f"must be an integer >= 0, got {self.pause_after!r}")


class SoloTracker:
    """Counts solo rounds in a row and says when the peer pauses (module docstring)."""

    def __init__(self, cfg: SoloConfig | None = None) -> None:
        self.cfg = cfg or SoloConfig()
        #: solo rounds in a row (0: the last round mixed a neighbour)
        self.rounds = 0
        #: solo rounds since start
        self.total = 0
        self.paused = False

    def observe(self, mixed_neighbours: int, *, group_round: bool = False) -> SoloEvent | None:
        """After a round that mixed ``mixed_neighbours`` neighbour models (``group_round``: its model is a
        secure-aggregation mean: not solo); the event to log, if any."""
        if mixed_neighbours > 0 or group_round:
            was = self.rounds
            self.rounds, self.paused = 0, False
            return "rejoined" if was > 0 else None
        self.rounds += 1
        self.total += 1
        if self.cfg.pause_after and self.rounds >= self.cfg.pause_after and not self.paused:
            self.paused = True
            return "paused"
        return "solo" if self.rounds == 1 else None

    def may_run(self, neighbour_version_since_last_round: bool) -> bool:
        """Whether the next round may start: always unless paused; while paused, once a neighbour's new
        version arrived since the last round."""
        return not self.paused or neighbour_version_since_last_round

    def status(self) -> dict[str, int | bool]:
        return {"rounds": self.rounds, "total": self.total, "paused": self.paused}


def woken(
    held_at_mix: Mapping[str, int],
    held_now: Mapping[str, int],
    taken_at_mix: Mapping[str, int],
    mixable_now: Mapping[str, int],
) -> bool:
    """Whether a paused peer has a neighbour's news (peer -> seq, non-evicted neighbours only): a version
    it did not hold at its last mix (``held_at_mix``), or one mixable now (``mixable_now``: fresh, not
    evicted) that the last mix did not take (``taken_at_mix``: its candidates), e.g. a finished
    neighbour's final version whose stale replica its signer confirmed again (module docstring)."""
    if any(held_at_mix.get(p) != seq for p, seq in held_now.items()):
        return True
    return any(taken_at_mix.get(p) != seq for p, seq in mixable_now.items())
