"""A member's side of secure aggregation inside a running peer: drives :class:`GroupRound` over a channel.

This is the edge where the pure state machine meets a clock (trio's) and a network (any
:class:`GroupChannel`: the simulation's in-memory hub, or a transport). The peer's round loop calls
:meth:`GroupMember.mean` with its freshly trained model and publishes what it returns instead: the group's
mean, or ``None`` when the group round failed (the caller then republishes the model it started the round
from, so a failed round never lets an individual model out).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import trio

from p2pfl.fsutil import atomic_write
from p2pfl.identity import Identity
from p2pfl.secagg.config import SecAggConfig
from p2pfl.secagg.errors import SecAggError
from p2pfl.secagg.group import Send
from p2pfl.secagg.session import GroupSession
from p2pfl.secagg.spec import GroupSpec

log = logging.getLogger("p2pfl.secagg")

#: group round numbers stay below this (the messages carry 63 bits)
_MAX_ROUND = 1 << 62


def _load_round(path: Path | None) -> int:
    """The next group round number kept in ``path`` (0: none kept, or unreadable: logged)."""
    if path is None or not path.exists():
        return 0
    try:
        value = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.warning("secagg: cannot read the group round number in %s (%s): starting from 0", path, exc)
        return 0
    return value if 0 <= value < _MAX_ROUND else 0


#: the most waiting messages handed to the session before a round begins (the channels bound them anyway)
_DRAIN_MAX = 4096


class GroupChannel(Protocol):
    """Point-to-point delivery of opaque bytes between the group's members."""

    async def send(self, to: str, data: bytes) -> None: ...

    async def receive(self) -> bytes:
        """The next message for this member; raises ``trio.ClosedResourceError`` or ``trio.EndOfChannel``
        once the channel is closed (the round in progress then ends as failed: ``closed``)."""
        ...


class GroupMember:
    """One peer's membership of its group; counts rounds, failures by reason, rejections and bytes."""

    def __init__(
        self,
        config: SecAggConfig,
        identity: Identity,
        network_id: str,
        channel: GroupChannel,
        *,
        randbytes: Callable[[int], bytes] = os.urandom,
        round_file: Path | None = None,
    ) -> None:
        """``round_file``: where the next group round number is kept across restarts (None: in memory
        only), so a restarted member never reruns a round number it used."""
        if identity.peer_id not in config.members:
            raise SecAggError("not_member", "this peer is not in its own [secagg] members")
        self.config = config
        self.identity = identity
        self.network_id = network_id
        self.channel = channel
        self._rand = randbytes
        #: the succession of group rounds (sans I/O; this class only feeds it)
        self.session = GroupSession(identity, randbytes=randbytes)
        #: the number of the last group round run (-1: none)
        self.last_round = -1
        self._round_file = round_file
        self._persisted = _load_round(round_file)
        #: group rounds left in their advertise phase to join the group's later round
        self.overtaken = 0
        self.completed = 0
        self.failures: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.bytes_sent = 0
        self.clipped = 0
        self.last_survivors: tuple[str, ...] = ()

    def is_fellow(self, peer_id: str) -> bool:
        """Another member of the group (its public models are group means we already mix)."""
        return peer_id != self.identity.peer_id and peer_id in self.config.members

    def fellows(self) -> frozenset[str]:
        """The other members: the peer mutes their announcements (they carry the mean it already holds)."""
        return frozenset(m for m in self.config.members if self.is_fellow(m))

    def spec(self, dim: int) -> GroupSpec:
        return self.config.spec(self.network_id, dim)

    async def mean(self, round_: int, vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32] | None:
        """Run the next group round with our ``vector``; the group's mean, or None if the round failed.
        ``round_`` is a floor for the group round number (the peer's own round counter, which survives a
        restart); the number itself is the group's (:mod:`p2pfl.secagg.session`: a late member joins the
        others' round, a member ahead waits for them)."""
        spec = self.spec(int(vector.shape[0]))
        session = self.session
        session.use(spec)
        self._drain(session)  # what arrived between rounds: a later round's adverts say where the group is
        sends = session.begin(spec, vector, trio.current_time(), floor=max(round_, self._persisted))
        await self._send(spec, sends)
        while not session.done:
            got: list[bytes] = []
            try:
                with trio.move_on_at(session.deadline + 0.001):
                    got.append(await self.channel.receive())
            except (trio.ClosedResourceError, trio.EndOfChannel):
                self.failures["closed"] += 1
                session.abandon()
                self._collect()
                return None
            now = trio.current_time()
            await self._send(spec, session.receive(got[0], now) if got else session.tick(now))
        group_round = session.current.round if session.current is not None else -1
        clipped = session.current.clipped if session.current is not None else 0
        result, failure = session.finish()
        self._collect()
        self.clipped += clipped
        self.last_round = group_round
        if result is None:
            self.failures[failure or "unknown"] += 1
            log.warning("secagg group round %d failed: %s", group_round, failure)
            return None
        self.completed += 1
        self.last_survivors = tuple(spec.members[i] for i in result.survivors)
        return result.mean

    def _drain(self, session: GroupSession) -> None:
        """Hand the session every message already waiting in the channel (it keeps later rounds' ones)."""
        nowait: Callable[[], bytes] | None = getattr(self.channel, "receive_nowait", None)
        if nowait is None:
            return
        now = trio.current_time()
        for _ in range(_DRAIN_MAX):
            try:
                data = nowait()
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                return
            session.receive(data, now)  # no round runs: nothing to send

    def _collect(self) -> None:
        """Move the session's counts into ours (status shows them)."""
        self.rejections.update(self.session.rejections)
        self.session.rejections.clear()
        self.overtaken += self.session.overtaken
        self.session.overtaken = 0

    async def _send(self, spec: GroupSpec, sends: list[Send]) -> None:
        next_round = self.session.next_round
        if sends and self._round_file is not None and next_round > self._persisted:
            # before any message of a round leaves: a crash then never reruns this number
            try:
                await trio.to_thread.run_sync(atomic_write, self._round_file, b"%d" % next_round)
            except OSError as exc:  # a rerun number fails its round (adverts digest), never skews it
                log.warning("secagg: cannot keep the group round number: %s", exc)
            self._persisted = next_round
        for s in sends:
            for to in s.to:
                self.bytes_sent += len(s.data)
                await self.channel.send(spec.members[to], s.data)
