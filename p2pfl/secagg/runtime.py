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
from typing import Protocol

import numpy as np
import numpy.typing as npt
import trio

from p2pfl.identity import Identity
from p2pfl.secagg.config import SecAggConfig
from p2pfl.secagg.errors import SecAggError
from p2pfl.secagg.group import GroupRound, Send
from p2pfl.secagg.messages import peek_round
from p2pfl.secagg.spec import GroupSpec

log = logging.getLogger("p2pfl.secagg")

#: messages of the next round kept per member until this member gets there (5 phases, with copies to spare)
_EARLY_PER_MEMBER = 8


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
    ) -> None:
        if identity.peer_id not in config.members:
            raise SecAggError("not_member", "this peer is not in its own [secagg] members")
        self.config = config
        self.identity = identity
        self.network_id = network_id
        self.channel = channel
        self._rand = randbytes
        self._early: list[tuple[int, bytes]] = []
        self._last_round = -1
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
        """Run group round ``round_`` with our ``vector``; the group's mean, or None if the round failed."""
        spec = self.spec(int(vector.shape[0]))
        now = trio.current_time()
        machine = GroupRound(spec, self.identity, round_, vector, now=now, randbytes=self._rand)
        await self._send(spec, machine.start())
        early, self._early = self._early, []
        for r, kept in early:
            if r == round_:
                await self._send(spec, machine.receive(kept, trio.current_time()))
            elif r > round_:
                self._early.append((r, kept))
        while not machine.done:
            got: list[bytes] = []
            try:
                with trio.move_on_at(machine.deadline + 0.001):
                    got.append(await self.channel.receive())
            except (trio.ClosedResourceError, trio.EndOfChannel):
                self.failures["closed"] += 1
                return None
            if not got:
                await self._send(spec, machine.tick(trio.current_time()))
                continue
            data = got[0]
            claimed = peek_round(data)
            if claimed is not None and claimed > round_:
                # a fellow already in the next round (never further: it waits for us): kept, bounded
                if claimed == round_ + 1 and len(self._early) < _EARLY_PER_MEMBER * len(spec.members):
                    self._early.append((claimed, data))
                continue
            if claimed is not None and claimed == self._last_round:
                # the rest of the previous round's messages (we finished it with the first t shares)
                self.rejections["late"] += 1
                continue
            await self._send(spec, machine.receive(data, trio.current_time()))
        self._last_round = round_
        self.rejections.update(machine.rejections)
        self.clipped += machine.clipped
        if machine.result is None:
            self.failures[machine.failure or "unknown"] += 1
            log.warning("secagg round %d failed: %s (%s)", round_, machine.failure, machine.failure_message)
            return None
        self.completed += 1
        self.last_survivors = tuple(spec.members[i] for i in machine.result.survivors)
        return machine.result.mean

    async def _send(self, spec: GroupSpec, sends: list[Send]) -> None:
        for s in sends:
            for to in s.to:
                self.bytes_sent += len(s.data)
                await self.channel.send(spec.members[to], s.data)
