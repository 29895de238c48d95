"""Equivocation as evidence: the signed headers a peer saw, the proofs they yield, and who is convicted.

A peer signs each version of its public model once. :class:`HeaderBook` keeps, per sender, the signed headers
of its recent versions (deltas and snapshots, verified); a second validly signed header of the same version
that claims a different model (``result``) turns the pair into a :class:`~p2pfl.wire.proof.Proof`. The
observer convicts the sender (a ban with reason ``equivocation``) and gossips the proof; every peer that
verifies it convicts too. There is no vote: the two signatures are the evidence, so a relay's word counts for
nothing and a forged or replayed proof convicts no one (it fails :func:`~p2pfl.wire.proof.verify_proof`).

:class:`ProofBook` bounds the proof traffic: a peer relays one proof per convicted sender, once, and
remembers the proofs it verified (by their bytes) so a copy costs a dictionary lookup, not two verifies.
Pure: the caller passes ``now``.
"""

from __future__ import annotations

from collections import OrderedDict

from p2pfl.wire import Envelope
from p2pfl.wire.proof import SignedHeader, encode_proof, make_proof

#: recent versions remembered per sender (an equivocator is caught when its two versions arrive within
#: this many versions of each other; both versions of one seq arrive within a round or two in practice)
VERSIONS_PER_SENDER = 8
#: senders remembered (least recently heard forgotten)
MAX_SENDERS = 1024
#: verified proofs remembered by their bytes
MAX_PROOFS = 256


class HeaderBook:
    """Per sender, the signed header of each recent version and the model digest it claims."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, dict[int, tuple[bytes, SignedHeader]]] = OrderedDict()

    def observe(self, env: Envelope) -> bytes | None:
        """Record a verified envelope's header; the encoded proof if it contradicts one recorded earlier."""
        h = env.header
        versions = self._seen.setdefault(h.sender, {})
        self._seen.move_to_end(h.sender)
        signed = SignedHeader(env.header_bytes, env.signature)
        known = versions.get(h.seq)
        if known is not None:
            if known[0] != h.result:
                return encode_proof(make_proof(known[1], signed))
            return None
        versions[h.seq] = (h.result, signed)
        while len(versions) > VERSIONS_PER_SENDER:
            del versions[min(versions)]
        while len(self._seen) > MAX_SENDERS:
            self._seen.popitem(last=False)
        return None

    def forget(self, sender: str) -> None:
        self._seen.pop(sender, None)

    def __len__(self) -> int:
        return len(self._seen)


class ProofBook:
    """Verified proofs (by bytes -> convicted sender) and the senders whose proof this peer relayed."""

    def __init__(self) -> None:
        self._verified: OrderedDict[bytes, str] = OrderedDict()
        self._relayed: OrderedDict[str, None] = OrderedDict()
        #: proofs verified (received or made here), proofs relayed
        self.verified = 0
        self.relayed = 0

    def known(self, proof: bytes) -> str | None:
        """The sender a proof with these bytes convicts, if it was verified before."""
        return self._verified.get(proof)

    def remember(self, proof: bytes, sender: str) -> None:
        self._verified[proof] = sender
        self._verified.move_to_end(proof)
        self.verified += 1
        while len(self._verified) > MAX_PROOFS:
            self._verified.popitem(last=False)

    def should_relay(self, sender: str) -> bool:
        """True once per convicted sender: the first proof against it is relayed, later ones are not."""
        if sender in self._relayed:
            return False
        self._relayed[sender] = None
        self.relayed += 1
        while len(self._relayed) > MAX_SENDERS:
            self._relayed.popitem(last=False)
        return True
