"""Several gossip (mixing) steps per round: when a round mixes again, and what the extra step publishes.

On a sparse graph one mix per round moves information one hop per round, so a peer's model reflects the
data of its ``d``-hop neighbourhood only after ``d`` rounds of local training that keep pulling it back
towards its own (non-IID) data. ``mix_steps = k`` makes each round: train, publish the trained model, mix
(step 1, as before); then ``k - 1`` times: wait for the neighbours' newer versions (the round pacing, same
rules), publish the own current mix as a new version, and mix it with them again. An extra step trains
nothing; it only spreads the round's models one more hop.

What an extra step's version is on the wire: an ordinary signed delta (``seq + 1``, chained on the previous
public version), received, rate-limited, checked, scored (once per version) and mixed exactly like a
trained one. There is no second channel: a poisoner gains one more version per step, which the same scorer
scores, and a version it sends is the one its neighbours hold until the next, whatever step it comes in.
For the scorer's direction signal an extra step scores against the own update since the *start of the
round* (training plus the mixes so far), not against the step's own zero update (which would switch the
cosine signal off for every extra step).

Pure: the round loop asks :func:`step_due` with what it holds, and keeps the versions each mix took
(:class:`MixLedger`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from p2pfl.errors import ConfigError

#: the most mixing steps a round may run (each is a version per neighbour: bytes grow with it)
MAX_MIX_STEPS = 8


@dataclass(frozen=True)
class MixConfig:
    """``mix_steps``: mixing steps per round (1: one mix per round, the protocol before issue 16)."""

    mix_steps: int = 1

    def __post_init__(self) -> None:
        k = self.mix_steps
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_MIX_STEPS:
            raise ConfigError("peer", "mix_steps", f"must be an integer in [1, {MAX_MIX_STEPS}], got {k!r}")


class MixLedger:
    """The version of each neighbour the last mix took, to tell whether a new mix has anything new."""

    def __init__(self) -> None:
        self._taken: dict[str, int] = {}

    def record(self, versions: Iterable[tuple[str, int]]) -> None:
        """The (peer, seq) pairs the mix just took (replaces the previous mix's)."""
        self._taken = dict(versions)

    @property
    def taken(self) -> Mapping[str, int]:
        """The (peer -> seq) the last mix took (a paused solo peer's news is measured against it)."""
        return self._taken

    def fresh(self, versions: Mapping[str, int]) -> int:
        """How many of ``versions`` (peer -> seq now held) are newer than what the last mix took."""
        return sum(1 for p, seq in versions.items() if seq > self._taken.get(p, -1))


def shut_out(contributions: Iterable[tuple[str, float]]) -> set[str]:
    """The peers an earlier mix of this round gave no weight (scored bad and dropped at once, doubted,
    absurd, evicted, or still young): the round's later steps neither score nor mix their newer versions.
    A poisoner that follows a bad version with a good one (e.g. an honest-looking mix) within the round
    would otherwise reset its run of bad scores each round and never be evicted (measured: sign-flippers
    4/4 evicted with one step, 0/4 with two, before this rule); its next round's first version is scored
    as before."""
    return {peer for peer, weight in contributions if weight <= 0.0}


def step_due(step: int, cfg: MixConfig, fresh: int, *, stopped: bool = False, private: bool = False) -> bool:
    """Whether extra step ``step`` (2 .. ``mix_steps``) runs: not once the peer stops, not under
    differential privacy (every release spends budget; only trained models are released), and only with
    at least one neighbour version newer than the last mix took (re-mixing the same versions is no new
    information: it only moves weight from the own model to them, and would publish a version for it)."""
    return 2 <= step <= cfg.mix_steps and not stopped and not private and fresh > 0
