"""One group round of secure aggregation (Bonawitz et al. 2017) as a sans-I/O state machine.

There is no server: every member plays the aggregator for itself, and all members compute the same mean.

1. **advertise**: send a fresh mask key ``s_pk`` and a commitment to a fresh self-mask seed ``b``. At the
   end: ``U1``, the members heard from.
2. **share keys**: Shamir-share ``b`` and ``s_sk`` (threshold ``t``); send each member of ``U1`` its two
   shares, each signed by us, encrypted to its identity-derived X25519 key. ``U2``: the members whose shares
   we got.
3. **masked input**: send ``y = encode(x) + PRG(b) + sum_v +-PRG(s_uv)`` (``+`` towards higher indices) over
   the members of ``U2``, naming that mask set. ``U3``: the members whose masked vector we got; every pair
   of ``U3`` must have masked with each other.
4. **consistency**: send our ``U3`` and a digest of the key adverts we used for it; every view we receive must
   equal ours, else the round fails before any secret is revealed: a member that claims ``w`` dropped to one
   member and alive to another would get both of ``w``'s secrets otherwise, and members holding different
   adverts of one member (an old one replayed to some) would unmask a wrong mean.
5. **unmask**: reveal our share of ``b_w`` for each ``w`` in ``U3`` and of ``s_w`` for each ``w`` that
   masked with a survivor but dropped: never both for one member. With ``t`` dealer-signed shares of each,
   rebuild the secrets, check them against the advertised ``s_pk`` and commitment, remove the masks and
   decode the mean.

Each phase ends when every expected message arrived or at its deadline (time passed in); fewer than ``t``
members (or shares) left fails the round with ``below_threshold``. Every bad message is counted in
``rejections`` by its reason and otherwise ignored: it never raises out of :meth:`receive`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from p2pfl.identity import public_key_from_peer_id, verify
from p2pfl.secagg import crypto
from p2pfl.secagg.errors import SecAggError
from p2pfl.secagg.masking import GroupResult, GroupState, Phase, Send
from p2pfl.secagg.messages import (
    Advertise,
    Body,
    Masked,
    Message,
    Revealed,
    Shares,
    Unmask,
    View,
    adverts_digest,
    decode,
    open_shares,
    share_statement,
)

__all__ = ["GroupResult", "GroupRound", "Phase", "Send"]

_PHASE_OF = {"advertise": 0, "shares": 1, "masked": 2, "view": 3, "unmask": 4}
#: the most messages a member buffers for phases it has not reached
_MAX_PENDING = 64


class GroupRound(GroupState):
    """This member's side of one group round. Feed it ``receive(data, now)`` and ``tick(now)``; send what
    they return. ``phase`` ends as ``DONE`` (``result``) or ``FAILED`` (``failure``: a reason slug)."""

    # ------------------------------------------------------------------------------- driving

    def start(self) -> list[Send]:
        """The first messages (our key advert)."""
        return [self._send(self._others(), "advertise", Advertise(self._mask_pk, self._commit_b))]

    def receive(self, data: bytes, now: float) -> list[Send]:
        """Take one message from the group; returns what to send. Never raises for a remote input."""
        if self.phase >= Phase.DONE:
            return []
        try:
            msg = decode(data, group=self.spec.group, members=self.spec.members, dim=self.spec.dim)
            digest = hashlib.sha256(msg.raw).digest()
            if msg.round < self.round or digest in self._seen or msg.sender == self.me:
                raise SecAggError("replay", f"{msg.kind} of round {msg.round} from member {msg.sender}")
            if msg.round > self.round:
                raise SecAggError("wrong_round", f"round {msg.round}, this is {self.round}")
            if _PHASE_OF[msg.kind] < self.phase:
                raise SecAggError("late", f"{msg.kind} from member {msg.sender} in phase {self.phase.name}")
            self._seen.add(digest)
        except SecAggError as exc:
            self.rejections[exc.reason] += 1
            return []
        if _PHASE_OF[msg.kind] > self.phase:
            if len(self._pending) >= _MAX_PENDING:
                self.rejections["oversize"] += 1
            else:
                self._pending.append(msg)
            return self._advance(now)
        self._take(msg)
        return self._advance(now)

    def tick(self, now: float) -> list[Send]:
        """Let time pass: a phase whose deadline passed ends with what it has."""
        return [] if self.phase >= Phase.DONE else self._advance(now)

    @property
    def done(self) -> bool:
        return self.phase >= Phase.DONE

    # --------------------------------------------------------------------------- messages in

    def _take(self, msg: Message) -> None:
        """Store a verified message of the current phase, or count why not."""
        try:
            self._store(msg.sender, msg.body)
        except SecAggError as exc:
            self.rejections[exc.reason] += 1
            if exc.reason != "wrong_recipient":
                # it spoke (badly): nobody waits for it. Not so for its shares to another member: anyone on
                # the network can replay those to us, and taking them for its word would close the phase
                # before its shares for us arrive (it would be left out of the round)
                self._refused.add((msg.sender, self.phase))

    def _store(self, sender: int, body: Body) -> None:
        if isinstance(body, Advertise):
            self._once(self._adverts, sender)
            crypto.agree(self._mask_sk, body.mask_pk)  # weak_key: a small-order key is refused here
            self._adverts[sender] = body
        elif isinstance(body, Shares):
            if body.recipient != self.me:
                raise SecAggError("wrong_recipient", f"shares for member {body.recipient}")
            if sender not in self._u1:
                raise SecAggError("inconsistent", f"shares from member {sender}, whose keys we did not get")
            self._once(self._held, sender)
            plain = open_shares(
                self._box_sk, crypto.peer_box_key(self.spec.members[sender]), body.nonce, body.ciphertext
            )
            for kind, share, sig in (("b", plain.share_b, plain.sig_b), ("s", plain.share_s, plain.sig_s)):
                if not self._dealt_by(sender, self.me, kind, share, sig):
                    raise SecAggError("bad_share", f"member {sender}'s {kind} share is not signed by it")
            self._held[sender] = plain
        elif isinstance(body, Masked):
            if sender not in self._u1 or not set(body.mask_set) <= set(self._u1):
                raise SecAggError("inconsistent", f"a masked input from member {sender} naming unknown keys")
            self._once(self._masked, sender)
            self._masked[sender] = body
        elif isinstance(body, View):
            if sender not in self._u3:
                raise SecAggError("inconsistent", f"a view from member {sender}, not a survivor to us")
            self._once(self._views, sender)
            if body.survivors != self._u3:
                self._fail("inconsistent", f"member {sender} saw other survivors: no secret is revealed")
                return
            if body.adverts != self._adverts_digest():
                # it masked against other keys of some member (e.g. an old advert replayed to it): the
                # masks would not cancel, and the mean would be wrong without anyone noticing
                self._fail("inconsistent", f"member {sender} holds other key adverts: no secret is revealed")
                return
            self._views[sender] = body
        elif isinstance(body, Unmask):
            self._store_unmask(sender, body)

    def _store_unmask(self, sender: int, body: Unmask) -> None:
        if sender not in self._u3:
            raise SecAggError("inconsistent", f"shares revealed by member {sender}, not a survivor to us")
        if any(x == sender + 1 for key in self._revealed.values() for x in key):
            raise SecAggError("duplicate", f"member {sender} revealed shares twice")
        for item in body.items:
            expected = "b" if item.dealer in self._u3 else "s"
            if item.kind != expected or (item.kind == "s" and item.dealer not in self._dropped):
                raise SecAggError(
                    "inconsistent", f"member {sender} revealed a {item.kind} share of {item.dealer}"
                )
            if not self._dealt_by(item.dealer, sender, item.kind, item.share, item.signature):
                raise SecAggError(
                    "bad_share", f"a share revealed by member {sender} is not signed by its dealer"
                )
        for item in body.items:
            self._revealed.setdefault((item.dealer, item.kind), {})[sender + 1] = item.share

    def _dealt_by(self, dealer: int, holder: int, kind: str, share: bytes, sig: bytes) -> bool:
        statement = share_statement(self.spec.group, self.round, dealer, holder, kind=kind, share=share)
        return verify(public_key_from_peer_id(self.spec.members[dealer]), statement, sig)

    @staticmethod
    def _once(store: Mapping[int, object], sender: int) -> None:
        if sender in store:
            raise SecAggError("duplicate", f"a second message of this phase from member {sender}")

    # ------------------------------------------------------------------------------- phases

    def _advance(self, now: float) -> list[Send]:
        out: list[Send] = []
        for _ in range(8):  # at most one step per phase
            if self.phase >= Phase.DONE or not self._phase_over(now):
                break
            out += self._next_phase(now)
            pending, self._pending = self._pending, []
            for msg in pending:
                if _PHASE_OF[msg.kind] == self.phase:
                    self._take(msg)
                else:
                    self._pending.append(msg)
        return out

    def _expected(self) -> tuple[set[int], tuple[int, ...]]:
        """The members heard from in this phase, and the members expected to speak."""
        if self.phase == Phase.ADVERTISE:
            return set(self._adverts), tuple(range(len(self.spec.members)))
        if self.phase == Phase.SHARE_KEYS:
            return set(self._held), self._u1
        if self.phase == Phase.MASKED_INPUT:
            return set(self._masked), self._u2
        return set(self._views), self._u3

    def _phase_over(self, now: float) -> bool:
        if self.phase == Phase.UNMASK:
            return now >= self.deadline or all(
                len(self._revealed.get((w, k), {})) >= self.spec.threshold for w, k in self._needed()
            )
        store, expected = self._expected()
        spoke = store | {m for m, phase in self._refused if phase == self.phase}
        return now >= self.deadline or all(m in spoke or m == self.me for m in expected)

    def _next_phase(self, now: float) -> list[Send]:
        t = self.spec.threshold
        self.deadline = now + self.spec.phase_timeout_s
        if self.phase == Phase.ADVERTISE:
            self._u1 = tuple(sorted(self._adverts))
            if not self._enough(self._u1, "key adverts"):
                return []
            self.phase = Phase.SHARE_KEYS
            return self._deal()
        if self.phase == Phase.SHARE_KEYS:
            self._u2 = tuple(sorted({*self._held, self.me}))
            if not self._enough(self._u2, "key shares"):
                return []
            self.phase = Phase.MASKED_INPUT
            y = self._masked_input()
            self._masked[self.me] = Masked(self._u2, y.astype("<u4").tobytes())
            return [self._send(self._others(self._u1), "masked", self._masked[self.me])]
        if self.phase == Phase.MASKED_INPUT:
            if not self._survivors():
                return []
            self.phase = Phase.CONSISTENCY
            self._views[self.me] = View(self._u3, self._adverts_digest())
            return [self._send(self._others(self._u3), "view", self._views[self.me])]
        if self.phase == Phase.CONSISTENCY:
            if not self._enough(tuple(self._views), "consistency views"):
                return []
            self.phase = Phase.UNMASK
            items = []
            for w, kind in sorted(self._needed()):
                plain = self._held.get(w) if w != self.me else self._own_shares()
                if plain is None:
                    continue  # we never got w's shares: the others reveal theirs
                share, sig = (plain.share_b, plain.sig_b) if kind == "b" else (plain.share_s, plain.sig_s)
                items.append(Revealed(w, kind, share, sig))
                self._revealed.setdefault((w, kind), {})[self.me + 1] = share
            return [self._send(self._others(self._u3), "unmask", Unmask(tuple(items)))]
        # UNMASK
        if not all(len(self._revealed.get(key, {})) >= t for key in self._needed()):
            self._fail("below_threshold", f"fewer than {t} shares of some secret were revealed in time")
            return []
        try:
            self.result = self._unmask()
            self.phase = Phase.DONE
        except SecAggError as exc:
            self._fail(exc.reason, str(exc))
        return []

    def _survivors(self) -> bool:
        """Fix ``U3`` and the dropped members from the masked inputs (every member computes the same from
        the same messages). A member that masked with ``v`` while ``v`` did not mask with it (``v`` never
        got, or refused, its shares) is left out: its input is dropped and its pairwise masks are removed
        like a dropped member's, and its self-mask seed is never revealed."""
        sets = {u: set(m.mask_set) for u, m in self._masked.items()}
        left_out = {u for u in sets for v in sets if u != v and v in sets[u] and u not in sets[v]}
        if left_out:
            self.rejections["inconsistent"] += len(left_out)
        self._u3 = tuple(sorted(set(sets) - left_out))
        if self.me in left_out:
            self._fail("inconsistent", "a member refused our key shares: our input is left out")
            return False
        if not self._enough(self._u3, "consistent masked inputs"):
            return False
        self._dropped = tuple(sorted(set().union(*(sets[u] for u in self._u3)) - set(self._u3)))
        return True

    def _adverts_digest(self) -> bytes:
        """What our masks and unmasking rest on: the adverts of the survivors and the dropped members."""
        used = sorted({*self._u3, *self._dropped})
        return adverts_digest([(w, self._adverts[w].mask_pk, self._adverts[w].commit_b) for w in used])

    def _enough(self, members: tuple[int, ...], what: str) -> bool:
        if len(members) < self.spec.threshold:
            self._fail("below_threshold", f"{len(members)} {what}, {self.spec.threshold} needed")
            return False
        return True

    def _fail(self, reason: str, message: str) -> None:
        self.phase = Phase.FAILED
        self.failure = reason
        self.failure_message = message
