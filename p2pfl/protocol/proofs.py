"""The engine's equivocation proofs: verify a gossiped proof, convict its signer once, relay it once.

Split out of :mod:`p2pfl.protocol.receive` because a proof convicts by its signatures alone: it shares the
gossip path with deltas (told apart by their first byte) but none of a delta's checks, and a conviction is the
one verdict the receive side reaches without the scorer. :meth:`ProofSide._observe` is where every verified
header (a delta's or a snapshot's) is compared with the ones seen before (:mod:`p2pfl.protocol.equivocation`).
:class:`ProofSide` is a base of :class:`~p2pfl.protocol.receive.ReceiveSide`.
"""

from __future__ import annotations

from p2pfl.protocol.actions import Action, Evict, PublishProof
from p2pfl.protocol.core import EngineCore
from p2pfl.wire import Envelope
from p2pfl.wire.proof import proof_error


class ProofSide(EngineCore):
    """What the engine does with equivocation proofs and with each verified header (never raises)."""

    def _accept_proof(self, data: bytes, via: str | None, now: float | None) -> bool:
        """A gossiped equivocation proof is relayed only if it verifies (a copy of one verified before is
        not verified again). An invalid one is counted (``bad_proof``) against the forwarder, which should
        have verified it, and convicts no one."""
        data = bytes(data)
        if self.proofs.known(data) is not None:
            return True
        if now is not None and not self.rates.proof_allowed(via, now):
            self._reject("proof_rate_limited", via)
            return False
        header, _reason = proof_error(data, self.config.network_id)
        if header is None:
            self._reject("bad_proof", via)
            return False
        self.proofs.remember(data, header.sender)
        return True

    def handle_proof(self, data: bytes, via: str | None, now: float) -> list[Action]:
        """A gossiped equivocation proof arrived: if it verifies, convict its sender and relay it (once)."""
        sender = self.proofs.known(data)
        if sender is None:
            header, _reason = proof_error(data, self.config.network_id)
            if header is None:
                return self._reject("bad_proof", via)
            sender = header.sender
            self.proofs.remember(data, sender)
        return self._convict(sender, data, now)

    def _convict(self, sender: str, proof: bytes, now: float) -> list[Action]:
        """Ban ``sender`` for equivocation (once) and relay the proof (once per sender)."""
        if sender == self.peer_id:
            return []  # our own key signed two versions: only a restart without our state does that
        actions: list[Action] = []
        if self.bans.convict(sender, now, "equivocation"):
            self._reject("equivocation", sender)
            self.replicas.pop(sender, None)
            self._pending.pop(sender, None)
            self._fetching_for.pop(sender, None)
            self.headers.forget(sender)
            actions.append(Evict(sender, "equivocation"))
        if self.proofs.should_relay(sender):
            actions.append(PublishProof(proof, sender))
        return actions

    def _observe(self, env: Envelope, now: float) -> list[Action] | None:
        """Record a verified header; the conviction's actions if it contradicts an earlier one."""
        if env.header.sender == self.peer_id:
            return None
        proof = self.headers.observe(env)
        if proof is None:
            return None
        self.proofs.remember(proof, env.header.sender)
        return self._convict(env.header.sender, proof, now)
