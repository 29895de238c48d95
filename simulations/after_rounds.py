"""What an honest simulated peer does after its last round while slower peers still run (``[run]
after_rounds``).

A peer is done at ``[run] rounds``; its results (trace, model, counters) are frozen then. Slower peers (late
joiners, peers that churned out and back, peers with more work) still run rounds and mix with it. Three
behaviours:

* ``"mix"`` (default): it keeps training, publishing and mixing at its own pace until every honest peer is
  done, so a slower neighbour mixes models that still learn and is never left waiting for it.
* ``"respond"``: it runs a round only when a neighbour that has not finished (its last version's
  ``meta.round`` is below the run's ``rounds``) published a version it has not answered yet: one round per
  version of a slower neighbour, nothing once every neighbour is done. (``meta.round`` is sender-reported:
  a liar gets at most one round per version it publishes, what "mix" gives everyone.)
* ``"serve"``: it only serves its final model and forgets idle identities, as ``p2pfl peer`` does after
  its ``rounds`` (:mod:`p2pfl.peer_serve`); its slower neighbours mix its final version and do not wait
  for it, as it is ahead of them (:mod:`p2pfl.protocol.pacing`).

Measured on the memory engine (docs/benchmarks.md, "Finished peers"; ``benchmarks/bench_after_rounds.py``):
on a churned ring the slowest peer ended 0.3-6.7 points lower without "mix" in every paired run, and
"serve" took 1.6-2.8x the wall; with every peer in step all three end within 0.3 points and the CPU saved
was 0.78-1.03x. Hence "mix" by default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from p2pfl.protocol import Replica

AFTER_ROUNDS = ("respond", "mix", "serve")
#: how often a finished peer that is not running rounds looks again (whether every honest peer is done, or
#: a slower neighbour published)
SERVE_POLL_S = 0.05


class AfterRounds:
    """Decides, for a finished peer, whether it runs another round now (module docstring)."""

    def __init__(self, mode: str, target: int) -> None:
        self.mode = mode
        self.target = target
        #: ``respond``: each neighbour's version already answered (or held when the last round started)
        self._answered: dict[str, int] = {}

    def runs_round(
        self, round_: int, replicas: Mapping[str, Replica], evicted: Callable[[str], bool]
    ) -> bool:
        """Whether a peer at ``round_`` runs a round now (an unfinished peer always does)."""
        if round_ < self.target or self.mode == "mix":
            return True
        if self.mode == "serve":
            return False
        waiting = any(
            r.meta.round is not None and r.meta.round < self.target and self._answered.get(p) != r.seq
            for p, r in replicas.items()
            if not evicted(p)
        )
        if waiting:
            self._answered = {p: r.seq for p, r in replicas.items()}
        return waiting
