"""A member's succession of group rounds, keyed by the group round number (sans I/O: time passed in).

Members need not run their rounds in step. Each group round has a **group round number**, chosen by the
session, not by the peer's own round counter:

* a member runs a number at most once and its numbers only go up (:meth:`GroupSession.begin` takes the
  highest of: the caller's floor, one past the last number run, and the highest number a fellow member has
  advertised in a verified message, at most ``max_skip`` ahead);
* **a member that is late catches up**: while its round is still in the advertise phase (it has sent
  nothing but a fresh mask key and a commitment), a verified key advert of a later round from a member
  makes it leave its round and join that one with the same input (``overtaken``; at most once per
  :meth:`~GroupSession.begin`). Otherwise it joins at its next :meth:`~GroupSession.begin`;
* **a member that is ahead waits**: its advertise phase waits up to ``advertise_timeout_s`` for the others,
  who catch up as above; anything else of a later round is kept (verified, a few per member) until this
  member gets there;
* **a late contribution is rejected cleanly**: a message of an earlier round is counted (``late``: the
  rest of the round just finished; ``stale_round``: an older one or one skipped) and never reaches a round.

No wait is longer than a round's own deadlines, so a member that lags (or replays an old round's messages,
or advertises far-off rounds) delays the others by at most one advertise timeout per round and never
changes a mean: a replayed message is of another round (its signature covers the number); a member that
leaves a round makes it lose one member, as a dropout does; members holding different key adverts of one
member fail the round before any reveal (the view's adverts digest, :mod:`p2pfl.secagg.group`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from p2pfl.identity import Identity
from p2pfl.secagg.errors import SecAggError
from p2pfl.secagg.group import GroupResult, GroupRound, Phase, Send
from p2pfl.secagg.messages import Message, decode, peek_round
from p2pfl.secagg.spec import GroupSpec

#: how far ahead of this member's next number a fellow's round may be and still be taken (further:
#: ``wrong_round``); a bound on how fast one member can drive the numbers up
MAX_SKIP = 1000
#: messages of later rounds kept per member (5 phases, with copies to spare); beyond: ``flood``
AHEAD_PER_MEMBER = 8


class GroupSession:
    """One member's group rounds, one after the other. ``begin`` a round with the model, feed it
    ``receive(data, now)`` and ``tick(now)`` (send what they return) until ``done``, then ``finish``."""

    def __init__(
        self,
        identity: Identity,
        *,
        randbytes: Callable[[int], bytes] = os.urandom,
        max_skip: int = MAX_SKIP,
    ) -> None:
        self.identity = identity
        self.max_skip = max_skip
        self._rand = randbytes
        #: the lowest group round number this member may still run
        self.next_round = 1
        #: the number of the last round this member finished (-1: none)
        self.last_round = -1
        self.current: GroupRound | None = None
        self.rejections: Counter[str] = Counter()
        #: rounds left in their advertise phase to join a later one
        self.overtaken = 0
        #: whether the round begun last may still leave for a later one (once per begin: a member that
        #: kept advertising later rounds would otherwise hold the others in advertise phases forever)
        self._may_leave = False
        self._spec: GroupSpec | None = None
        self._vector: npt.NDArray[np.floating] | None = None
        self._ahead: dict[int, list[Message]] = {}  # member -> verified messages of later rounds

    # ------------------------------------------------------------------------------------- driving

    def begin(
        self, spec: GroupSpec, vector: npt.NDArray[np.floating], now: float, *, floor: int = 0
    ) -> list[Send]:
        """Start the next group round with our ``vector``; ``floor``: the lowest number the caller allows
        (e.g. its own persisted round counter). Returns the first messages."""
        if self.current is not None and not self.current.done:
            raise SecAggError("closed", "a group round is still running")
        self.use(spec)
        self._vector = vector
        start = max(floor, self.next_round)
        advertised = [m.round for kept in self._ahead.values() for m in kept if m.kind == "advertise"]
        self._may_leave = True
        return self._start(max([start, *advertised]), now)

    def use(self, spec: GroupSpec) -> None:
        """The group (and vector length) messages are checked against before the first round begins: from
        then on messages of rounds not begun yet are kept, not refused."""
        if self._spec is not None and spec.group != self._spec.group:
            self._ahead.clear()  # another group: nothing kept applies
        self._spec = spec

    def receive(self, data: bytes, now: float) -> list[Send]:
        """Take one message from the group; returns what to send. Never raises for a remote input."""
        claimed = peek_round(data)
        current = self.current
        if current is not None and not current.done and (claimed is None or claimed == current.round):
            return current.receive(data, now)  # (an unreadable one is counted there as malformed)
        if claimed is None:
            return self._count("malformed")
        if claimed < self.next_round:
            # the rest of the round we are finishing or just finished, else an older or skipped one
            recent = {self.last_round, current.round if current is not None else -1}
            return self._count("late" if claimed in recent else "stale_round")
        return self._later(data, claimed, now)

    def tick(self, now: float) -> list[Send]:
        """Let time pass (the running round's deadlines)."""
        if self.current is None or self.current.done:
            return []
        return self.current.tick(now)

    @property
    def done(self) -> bool:
        return self.current is None or self.current.done

    @property
    def deadline(self) -> float:
        return self.current.deadline if self.current is not None else float("inf")

    def finish(self) -> tuple[GroupResult | None, str | None]:
        """End the finished round: (its result, None) or (None, its failure reason). Its rejections are
        added to :attr:`rejections`."""
        current = self.current
        if current is None or not current.done:
            raise SecAggError("closed", "no finished group round")
        self.rejections.update(current.rejections)
        self.last_round = current.round
        self.current = None
        return current.result, current.failure

    def abandon(self) -> None:
        """Stop the running round unfinished (the channel closed); its number is never run again."""
        if self.current is not None:
            self.rejections.update(self.current.rejections)
            self.last_round = self.current.round
            self.current = None

    # ------------------------------------------------------------------------------------ internals

    def _start(self, round_: int, now: float) -> list[Send]:
        assert self._spec is not None and self._vector is not None
        if self.current is not None:  # left in its advertise phase (overtaken)
            self.rejections.update(self.current.rejections)
        self.current = GroupRound(
            self._spec, self.identity, round_, self._vector, now=now, randbytes=self._rand
        )
        self.next_round = round_ + 1
        out = self.current.start()
        for member in list(self._ahead):
            kept = []
            for msg in self._ahead.pop(member):
                if msg.round == round_:
                    out += self.current.receive(msg.raw, now)
                elif msg.round > round_:
                    kept.append(msg)
                else:
                    self.rejections["stale_round"] += 1  # a round we skipped
            if kept:
                self._ahead[member] = kept
        return out

    def _later(self, data: bytes, claimed: int, now: float) -> list[Send]:
        """A message of a round we are not running (yet): verified, then kept or acted on."""
        spec = self._spec
        if spec is None:
            return self._count("wrong_round")  # no round begun yet: we do not know the group's vectors
        if claimed > self.next_round + self.max_skip:
            return self._count("wrong_round")
        try:
            msg = decode(data, group=spec.group, members=spec.members, dim=spec.dim)
        except SecAggError as exc:
            return self._count(exc.reason)
        me = spec.index(self.identity.peer_id)
        if msg.sender == me:
            return self._count("replay")
        kept = self._ahead.setdefault(msg.sender, [])
        if any(m.raw == msg.raw for m in kept):
            return self._count("replay")
        kept.append(msg)
        if len(kept) > AHEAD_PER_MEMBER:  # keep the latest rounds: those are where the member is
            kept.sort(key=lambda m: m.round)
            del kept[0]
            self.rejections["flood"] += 1
        current = self.current
        if (
            msg.kind == "advertise"
            and self._may_leave
            and current is not None
            and current.phase == Phase.ADVERTISE
            and msg.round > current.round
        ):
            self.overtaken += 1  # we sent nothing but a fresh key: leave and join the later round
            self._may_leave = False
            return self._start(msg.round, now)
        return []

    def _count(self, reason: str) -> list[Send]:
        self.rejections[reason] += 1
        return []
