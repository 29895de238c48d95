"""Secure aggregation in simulations: the scenario's ``[secagg]`` section, the in-memory group hub, and the
libp2p engine's wiring.

``[secagg]`` puts the first ``members`` peers of the topology (or the listed peer indices) into one group
(docs/secagg.md): each round they run a group round and publish only the group's mean. In the ``memory``
engine the group's messages go over :class:`SecAggHub` (an in-process message hub that counts each member's
bytes); in the ``libp2p`` engine each member's config gets the ``[secagg]`` section
(:func:`member_config`) and its peer joins the group over ``/p2pfl/secagg/1`` as ``p2pfl peer`` does, and
the run's summary is read from the members' results (:func:`transport_summary`).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from p2pfl.errors import ConfigError, P2PFLError
from p2pfl.identity import Identity
from p2pfl.peer import Peer
from p2pfl.secagg.config import SecAggConfig
from p2pfl.secagg.runtime import GroupMember

from .scenario_attacks import ScenarioError, _get, _known

#: the [secagg] keys that pass through to p2pfl.secagg.SecAggConfig
_PASS = ("threshold", "scale_bits", "bound", "advertise_timeout_s", "phase_timeout_s")


@dataclass(frozen=True)
class SecAggSpec:
    """``members``: a count (the first peers) or a list of peer indices; 0 or absent: off. The other keys
    are :class:`p2pfl.secagg.SecAggConfig` fields (validated there)."""

    members: tuple[int, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()
    #: the largest share of a non-member's mix the group's members may hold together (an org share cap:
    #: they all publish the same mean); None: no cap
    outsider_share_cap: float | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.members)

    @classmethod
    def parse(cls, t: Mapping[str, Any], peers: int) -> SecAggSpec:
        s = "secagg"
        _known(t, s, {"members", "outsider_share_cap", *_PASS})
        cap = t.get("outsider_share_cap")
        if cap is not None and (
            isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 <= cap <= 1
        ):
            raise ScenarioError(s, "outsider_share_cap", f"a share in [0, 1], got {cap!r}")
        raw = t.get("members", 0)
        if isinstance(raw, int) and not isinstance(raw, bool):
            if not (raw == 0 or 2 <= raw <= peers):
                raise ScenarioError(s, "members", f"a count in [2, {peers}] (or 0: off), got {raw}")
            members = tuple(range(raw))
        else:
            members_list = _get(t, s, "members", list, [])
            if not all(isinstance(i, int) and 0 <= i < peers for i in members_list) or len(
                set(members_list)
            ) != len(members_list):
                raise ScenarioError(s, "members", f"distinct peer indices in [0, {peers}) expected")
            members = tuple(sorted(members_list))
        params = tuple((k, t[k]) for k in _PASS if k in t)
        spec = cls(members, params, None if cap is None else float(cap))
        if spec.enabled:
            fake = [Identity(bytes([i + 1]) * 32).peer_id for i in range(len(members))]
            try:
                spec.config(fake)
            except ConfigError as exc:
                if exc.key is not None and exc.reason is not None:
                    raise ScenarioError(s, exc.key, exc.reason) from None
                raise ScenarioError(f"[{s}] {exc}") from None
            except P2PFLError as exc:
                raise ScenarioError(f"[{s}] {exc}") from None
        return spec

    def config(self, peer_ids: Sequence[str]) -> SecAggConfig:
        """The members' ``[secagg]`` config, given the group's peer ids."""
        return SecAggConfig(enabled=True, members=tuple(peer_ids), **dict(self.params))

    def to_dict(self) -> dict[str, Any]:
        if not self.enabled:
            return {}
        cap = {} if self.outsider_share_cap is None else {"outsider_share_cap": self.outsider_share_cap}
        return {"members": list(self.members), **dict(self.params), **cap}


class _HubChannel:
    def __init__(self, hub: SecAggHub, me: str) -> None:
        self.hub, self.me = hub, me

    async def send(self, to: str, data: bytes) -> None:
        self.hub.bytes_sent[self.me] += len(data)
        if to in self.hub.inbox:
            self.hub.bytes_received[to] += len(data)
            with contextlib.suppress(trio.BrokenResourceError):  # the recipient stopped: it is gone
                self.hub.inbox[to][0].send_nowait(data)

    async def receive(self) -> bytes:
        return await self.hub.inbox[self.me][1].receive()

    def receive_nowait(self) -> bytes:
        return self.hub.inbox[self.me][1].receive_nowait()


class SecAggHub:
    """Delivers the group's messages in process (reliable and in order, like a stream per pair)."""

    def __init__(self, spec: SecAggSpec, peer_ids: Sequence[str], network_id: str) -> None:
        self.config = spec.config([peer_ids[i] for i in spec.members])
        self.outsider_share_cap = spec.outsider_share_cap
        self.network_id = network_id
        self.inbox: dict[str, tuple[trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[bytes]]] = {
            pid: trio.open_memory_channel[bytes](math.inf) for pid in self.config.members
        }
        self.bytes_sent: Counter[str] = Counter()
        self.bytes_received: Counter[str] = Counter()
        self.members: dict[str, GroupMember] = {}

    def bind(self, peer: Peer) -> None:
        """Make ``peer`` a member of the group, or give it the org share cap over the group's members."""
        peer.secagg = self.member(peer.identity)
        if peer.secagg is None:
            cap_outsider(peer, self.config.members, self.outsider_share_cap)

    def member(self, identity: Identity) -> GroupMember | None:
        """The group member for this peer (None: not in the group)."""
        if identity.peer_id not in self.config.members:
            return None
        m = self.members.get(identity.peer_id)
        if m is None:
            m = GroupMember(self.config, identity, self.network_id, _HubChannel(self, identity.peer_id))
            self.members[identity.peer_id] = m
        return m

    def close(self) -> None:
        """End the run: a member waiting in a group round stops at once (its round fails ``closed``)."""
        for _send, receive in self.inbox.values():
            receive.close()

    def summary(self) -> dict[str, Any]:
        """What results.json records of the group: rounds done and failed, rejections, bytes per member."""
        ms = self.members.values()
        return {
            "members": len(self.config.members),
            "threshold": self.config.group_threshold,
            "rounds_completed": {pid[-8:]: m.completed for pid, m in self.members.items()},
            "failures": dict(sum((m.failures for m in ms), Counter())),
            "rejections": dict(sum((m.rejections for m in ms), Counter())),
            "overtaken": sum(m.overtaken for m in ms),
            "clipped": sum(m.clipped for m in ms),
            "bytes_sent": {pid[-8:]: self.bytes_sent[pid] for pid in self.config.members},
            "bytes_received": {pid[-8:]: self.bytes_received[pid] for pid in self.config.members},
            # group rounds each member ran to their end (completed or failed; not one cut short at the end)
            "rounds_run": {
                pid[-8:]: m.completed + sum(n for r, n in m.failures.items() if r != "closed")
                for pid, m in self.members.items()
            },
        }


def cap_outsider(peer: Peer, members: Sequence[str], cap: float | None) -> None:
    """A non-member caps the group's members' share of its mix at ``cap`` (None: no cap)."""
    if cap is not None and peer.identity.peer_id not in members:
        peer.engine.set_groups(dict.fromkeys(members, "secagg"), {"secagg": cap})


def member_config(spec: SecAggSpec, peer_ids: Sequence[str], index: int) -> SecAggConfig | None:
    """The libp2p engine: the ``[secagg]`` config of peer ``index`` (None: not a member). With it the peer
    joins the group over ``/p2pfl/secagg/1`` itself (``Peer``'s own wiring, as in ``p2pfl peer``)."""
    if not spec.enabled or index not in spec.members:
        return None
    return spec.config([peer_ids[i] for i in spec.members])


def member_status(peer: Peer) -> dict[str, Any] | None:
    """What a member over a transport reports of its group (status.json's ``secagg`` block), else None."""
    from p2pfl.secagg.channel import group_status

    if peer.secagg is None or peer.secagg_channel is None:
        return None
    return group_status(peer.secagg, peer.secagg_channel)


def transport_summary(spec: SecAggSpec, results: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The libp2p engine's ``secagg`` block of results.json, from the members' results (the same keys as
    :meth:`SecAggHub.summary` where the members report them)."""
    if not spec.enabled:
        return None
    blocks = {str(r["id"])[-8:]: r.get("secagg") or {} for r in results if r["index"] in spec.members}
    threshold = dict(spec.params).get("threshold", 0) or len(spec.members) // 2 + 1
    return {
        "members": len(spec.members),
        "threshold": threshold,
        "rounds_completed": {k: b.get("completed", 0) for k, b in blocks.items()},
        "failures": dict(sum((Counter(b.get("failures", {})) for b in blocks.values()), Counter())),
        "rejections": dict(sum((Counter(b.get("rejections", {})) for b in blocks.values()), Counter())),
        "bytes_sent": {k: b.get("bytes_sent", 0) for k, b in blocks.items()},
        "channel": {k: b.get("channel", {}) for k, b in blocks.items()},
    }
