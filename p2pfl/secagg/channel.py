"""The group channel over a real transport: one secagg message per request on ``/p2pfl/secagg/1``.

:class:`TransportChannel` satisfies :class:`p2pfl.secagg.runtime.GroupChannel` over any
:class:`p2pfl.transport.base.Transport` (libp2p in ``p2pfl peer``). It only moves bytes: every message is
signed by its sender and decoded by a total decoder in the group round (``p2pfl.secagg.messages``), so the
channel checks only what it can check cheaply and must check before holding bytes in memory:

* **membership**: a request from a peer that is not another member of the configured group is refused
  (an error frame) and counted (``refused_not_member``), never delivered;
* **size**: a request above ``max_message_bytes`` is refused and counted (``refused_oversize``);
* **a bounded inbox**: at most ``inbox_per_member`` undelivered messages per sender and ``inbox_limit`` in
  all; beyond that a message is dropped and counted (``dropped_inbox_full``) -- the round treats a lost
  message as a member that did not speak, so a flooding member cannot grow our memory.

Sending never blocks the round loop: :meth:`TransportChannel.send` queues the message for its recipient
(bounded; ``dropped_send_queue_full`` beyond) and one task per recipient delivers that recipient's
messages in order, each request bounded by ``send_timeout_s`` and a failed one retried for ``retry_s``
(a member still starting, a connection being set up). A member that is slow or gone only fails its own
requests (``send_failed``); the group round meanwhile runs on its own deadlines and counts that member
as dropped. Members must be connected (or have a known address): a request to a member with no connection
and no known address fails at once and is counted the same way.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from p2pfl.errors import P2PFLError
from p2pfl.identity import Identity
from p2pfl.secagg.config import SecAggConfig
from p2pfl.secagg.errors import SecAggError
from p2pfl.secagg.runtime import GroupMember
from p2pfl.transport.base import Transport

log = logging.getLogger("p2pfl.secagg")

SECAGG_PROTOCOL = "/p2pfl/secagg/1"
#: the file in the peer's state directory that keeps the next group round number
ROUND_FILE = "secagg_round"
#: pause between two attempts at one message (see ``retry_s``)
RETRY_PAUSE_S = 0.5
#: what the receiver answers to a delivered (or dropped-when-full) message; the body carries no meaning
ACK = b""


class TransportChannel:
    """One member's group channel over ``transport``; see the module docstring for the limits."""

    def __init__(
        self,
        transport: Transport,
        me: str,
        members: Sequence[str],
        *,
        max_message_bytes: int,
        send_timeout_s: float,
        retry_s: float = 0.0,
        inbox_per_member: int = 32,
        send_queue_per_member: int = 32,
    ) -> None:
        if max_message_bytes <= 0 or not math.isfinite(send_timeout_s) or send_timeout_s <= 0:
            raise SecAggError("malformed", "channel limits must be positive")
        self.transport = transport
        self.me = me
        self.fellows = frozenset(m for m in members if m != me)
        self.max_message_bytes = max_message_bytes
        self.send_timeout_s = send_timeout_s
        self.retry_s = retry_s
        self.inbox_per_member = inbox_per_member
        self.inbox_limit = inbox_per_member * max(1, len(self.fellows))
        self._in_send, self._in_receive = trio.open_memory_channel[tuple[str, bytes]](self.inbox_limit)
        self._pending: Counter[str] = Counter()
        self._out: dict[str, tuple[trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[bytes]]] = {
            m: trio.open_memory_channel[bytes](send_queue_per_member) for m in sorted(self.fellows)
        }
        #: refusals, drops and failures by reason (see the module docstring)
        self.counts: Counter[str] = Counter()
        self.delivered = 0
        self.sent = 0
        self._closed = False

    # -- the receiving side (the transport's request handler) ------------------------------------------

    async def serve(self, peer_id: str, data: bytes) -> bytes:
        """The ``/p2pfl/secagg/1`` handler: gate, bound and queue one message; never blocks, never crashes
        on input (a refusal raises ``SecAggError``, which the transport turns into an error frame)."""
        if peer_id not in self.fellows:
            self.counts["refused_not_member"] += 1
            raise SecAggError("not_member", "not a member of this secure-aggregation group")
        if len(data) > self.max_message_bytes:
            self.counts["refused_oversize"] += 1
            raise SecAggError("oversize", f"message over {self.max_message_bytes} bytes")
        if self._closed:
            self.counts["dropped_closed"] += 1
            return ACK
        if self._pending[peer_id] >= self.inbox_per_member:
            self.counts["dropped_inbox_full"] += 1
            return ACK
        try:
            self._in_send.send_nowait((peer_id, bytes(data)))
        except trio.WouldBlock:
            self.counts["dropped_inbox_full"] += 1
            return ACK
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.counts["dropped_closed"] += 1
            return ACK
        self._pending[peer_id] += 1
        return ACK

    async def receive(self) -> bytes:
        """The next message for this member (``trio.ClosedResourceError``/``EndOfChannel`` once closed)."""
        return self._took(*await self._in_receive.receive())

    def receive_nowait(self) -> bytes:
        """A message already waiting, or ``trio.WouldBlock``."""
        return self._took(*self._in_receive.receive_nowait())

    def _took(self, sender: str, data: bytes) -> bytes:
        left = self._pending[sender] - 1
        if left > 0:
            self._pending[sender] = left
        else:
            del self._pending[sender]
        self.delivered += 1
        return data

    # -- the sending side ------------------------------------------------------------------------------

    async def send(self, to: str, data: bytes) -> None:
        """Queue ``data`` for member ``to``; returns at once (a full queue or a non-member drops it)."""
        queue = self._out.get(to)
        if queue is None:
            self.counts["send_not_member"] += 1
            return
        if len(data) > self.max_message_bytes:
            self.counts["send_oversize"] += 1
            return
        try:
            queue[0].send_nowait(data)
        except trio.WouldBlock:
            self.counts["dropped_send_queue_full"] += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.counts["dropped_closed"] += 1

    async def run(self) -> None:
        """Deliver queued messages, one task per recipient, until cancelled or closed."""
        async with trio.open_nursery() as nursery:
            for to, (_send, receive) in self._out.items():
                nursery.start_soon(self._deliver, to, receive)

    async def _deliver(self, to: str, queue: trio.MemoryReceiveChannel[bytes]) -> None:
        async for data in queue:
            give_up = trio.current_time() + self.retry_s
            while not await self._request(to, data):
                # not up yet, or a connection being set up: retried (in order) for ``retry_s``, then lost
                if trio.current_time() + RETRY_PAUSE_S > give_up:
                    self.counts["send_failed"] += 1
                    break
                self.counts["send_retried"] += 1
                await trio.sleep(RETRY_PAUSE_S)
            else:
                self.sent += 1

    async def _request(self, to: str, data: bytes) -> bool:
        try:
            await self.transport.request(
                to, SECAGG_PROTOCOL, data, max_response=64, timeout=self.send_timeout_s
            )
        except P2PFLError as exc:  # slow, gone, unknown or refusing
            log.debug("secagg message to %s not delivered: %s", to, exc)
            return False
        except Exception as exc:  # a transport bug must not stop the other recipients' deliveries
            log.warning("secagg message to %s failed: %s: %s", to, type(exc).__name__, exc)
            return False
        return True

    def close(self) -> None:
        """Stop: a member waiting in a group round stops at once (the round fails ``closed``)."""
        self._closed = True
        self._in_receive.close()
        for send, _receive in self._out.values():
            send.close()


def message_cap(members: int, dim: int) -> int:
    """The largest secagg message of a group of ``members`` for models of ``dim`` float32 coordinates: a
    masked vector is 4 bytes per coordinate plus its mask set; an ``unmask`` holds up to ``members``
    signed shares (~140 bytes each); the envelope and signature are under 200 bytes."""
    return 4 * dim + 4096 + 512 * members


def join_group(
    config: SecAggConfig,
    identity: Identity,
    network_id: str,
    transport: Transport,
    dim: int,
    *,
    state_dir: Path | None = None,
) -> tuple[GroupMember, TransportChannel]:
    """This peer's :class:`GroupMember` over ``transport``, its channel's handler registered on
    ``/p2pfl/secagg/1``; with ``state_dir`` the next group round number is kept there (``secagg_round``).
    The caller runs :meth:`TransportChannel.run` in its nursery."""
    channel = TransportChannel(
        transport,
        identity.peer_id,
        config.members,
        max_message_bytes=message_cap(len(config.members), dim),
        send_timeout_s=float(config.phase_timeout_s),
        retry_s=float(config.advertise_timeout_s),
    )
    round_file = None if state_dir is None else Path(state_dir) / ROUND_FILE
    member = GroupMember(config, identity, network_id, channel, round_file=round_file)
    transport.set_request_handler(SECAGG_PROTOCOL, channel.serve)
    return member, channel


def group_status(member: GroupMember, channel: TransportChannel | None) -> dict[str, Any]:
    """The ``secagg`` block of the peer's status: rounds completed and failed, rejections, channel counts."""
    out: dict[str, Any] = {
        "members": len(member.config.members),
        "threshold": member.config.group_threshold,
        "completed": member.completed,
        "failures": dict(member.failures),
        "rejections": dict(member.rejections),
        "last_survivors": len(member.last_survivors),
        "last_round": member.last_round,  # the group round number (members out of step catch up)
        "overtaken": member.overtaken,
        "bytes_sent": member.bytes_sent,
    }
    if channel is not None:
        out["channel"] = {"delivered": channel.delivered, "sent": channel.sent, **channel.counts}
    return out
