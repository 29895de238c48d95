"""What a simulated peer's round did to its attackers: mixing shares, evictions with their reasons, bans.

:class:`RoundObserver` taps the peer's engine (``finish_round``, on the instance) to keep the round's
outcome, and adds to each trace row of :class:`simulations.runner.PeerRunner`:

* ``mix``: for each attacker (or Sybil) among this round's mixing inputs, its share of the mix:
  ``weight / (own_weight + sum of the weights > 0)`` (0.0: it was a candidate and got no weight);
* ``evict_reasons``: the peers the round evicted, each with the first word of its reason;
* ``banned``: the neighbours evicted (banned) at the end of the round, whatever banned them;
* ``linked``: [learning links, those to attackers] when the round ended (runs with attackers): the
  connected peers the engine's mix filter admits (with ``mix_scope = "chosen"`` the links this peer chose;
  a resting link is not one). With link rotation and ``[attack] redial`` the attackers' share of them is
  what the attack fights for.

The peer code is untouched; only the outcome object it returns anyway is read.
"""

from __future__ import annotations

from typing import Any


class RoundObserver:
    """Per peer incarnation: :meth:`bind` after the Peer is built, :meth:`row` after each round."""

    def __init__(self, plan: Any, me: Any) -> None:
        self.attackers = frozenset(plan.peer_ids[p.index] for p in plan.peers if not p.honest)
        self.neighbours = tuple(plan.peer_ids[j] for j in me.neighbours)
        self._outcome: Any = None
        self._engine: Any = None

    def bind(self, peer: Any) -> None:
        engine = peer.engine
        finish = engine.finish_round
        self._engine = engine
        self._outcome = None

        def recording(*args: Any, **kwargs: Any) -> Any:
            out = finish(*args, **kwargs)
            self._outcome = out
            return out

        engine.finish_round = recording

    def row(self, peer: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        oc, self._outcome = self._outcome, None
        engine = peer.engine
        if oc is not None:
            contributions = list(getattr(oc, "contributions", ()))
            own = float(getattr(engine.aggregation, "own_weight", 1.0))
            total = own + sum(max(float(c.weight), 0.0) for c in contributions)
            mix = {
                c.peer: round(max(float(c.weight), 0.0) / total, 4)
                for c in contributions
                if c.peer in self.attackers
            }
            if mix:
                out["mix"] = mix
            reasons = {
                a.peer: str(a.reason).split(" (", 1)[0]
                for a in getattr(oc, "actions", ())
                if type(a).__name__ == "Evict"
            }
            if reasons:
                out["evict_reasons"] = reasons
        if self.attackers:
            admits = engine.mix_filter
            links = [p for p in peer.transport.connected_peers() if admits is None or admits(p)]
            out["linked"] = [len(links), sum(p in self.attackers for p in links)]
        banned = [p for p in self.neighbours if engine.is_evicted(p)]
        if banned:
            out["banned"] = banned
        return out
