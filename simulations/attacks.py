"""Attacks as wrappers around the real peer, never as flags inside ``p2pfl``.

A Byzantine peer runs the same :class:`p2pfl.peer.Peer` code as an honest one; what differs is

* its **learner** (model-poisoning attacks: ``signflip``, ``gaussian``, ``labelflip``, ``alie``, ``ipm``,
  ``labelperm``, ``honest_then_attack``, ``extreme``, ``mimic``, ``dissensus``): the wrapper returns a
  poisoned model from ``get_params`` right after local training, and that is what the peer publishes as its
  new version; the wrappers and what each publishes are in :mod:`simulations.poisoning` (re-exported here);

* its **behaviour on the network** (protocol attacks), as a background task using the peer's transport:

  - ``replay``: re-broadcasts its own old, validly signed envelopes every ``interval_s``; receivers must
    reject them (``replay``: the seq is not newer than their replica; ``stale_timestamp`` once one is older
    than the freshness window, p2pfl.protocol.freshness);
  - ``forge``: re-broadcasts its newest envelope with the sender rewritten to a neighbour's peer id, i.e.
    signed with the wrong key; the peers' gossip validators drop it before forwarding (counted as
    ``bad_signature`` by the engine and ``transport:gossip_invalid`` by the transport);
  - ``crash``: the peer stops for good after ``crash_round`` rounds (the runner enforces it);
  - ``equivocate``, ``slow``, ``flood``: see :mod:`simulations.protocol_attacks`.

  Replay and forge attackers train honestly: they test the protocol's defences, not the aggregator's.

* ``[attack] redial`` (with any kind): the attack on link rotation. The attacker dials again, every
  ``redial_s`` seconds, each peer that closed its link (``"closed"``) or every peer it is not linked to
  (``"all"``), so that a rotating peer's oldest-first closing never keeps it out; its own links do not
  rotate. ``"refresh"`` also drops each link it has held ``refresh_rounds`` rounds and dials it again a
  round later, to come back young before it is the oldest. The defence: the rest of a link that ended, at
  both ends (p2pfl.protocol.rotation, p2pfl.peer_rotation).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from p2pfl.learner import Learner

from .poisoning import ALIE as ALIE  # noqa: PLC0414
from .poisoning import IPM as IPM  # noqa: PLC0414
from .poisoning import Dissensus as Dissensus  # noqa: PLC0414
from .poisoning import Extreme as Extreme  # noqa: PLC0414
from .poisoning import Gaussian as Gaussian  # noqa: PLC0414
from .poisoning import HonestThenAttack as HonestThenAttack  # noqa: PLC0414
from .poisoning import LabelFlip as LabelFlip  # noqa: PLC0414
from .poisoning import LabelPerm as LabelPerm  # noqa: PLC0414
from .poisoning import Mimic as Mimic  # noqa: PLC0414
from .poisoning import Params as Params  # noqa: PLC0414
from .poisoning import SignFlip as SignFlip  # noqa: PLC0414
from .poisoning import _Omniscient, _Wrapper
from .poisoning import class_cycle as class_cycle  # noqa: PLC0414
from .protocol_attacks import ProtocolAttack
from .scenario import MODEL_ATTACKS, AttackSpec

# ------------------------------------------------------------------------------------- transport side


class _RecordingTransport:
    """Proxy of a transport that remembers the envelopes this peer broadcast (for replay and forge)."""

    def __init__(self, inner: Any, sink: deque[bytes]) -> None:
        self._inner = inner
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def broadcast(self, data: bytes) -> None:
        self._sink.append(bytes(data))
        await self._inner.broadcast(data)


class Behaviour:
    """One attacker's wrappers and background behaviour; see the module docstring.

    ``perm_seed`` is the label permutation's seed of ``labelperm`` (the same for every attacker of a run);
    ``colluders``: the peer ids of every attacker of the run (``mimic`` and ``dissensus`` ignore their
    models)."""

    def __init__(
        self, spec: AttackSpec, seed: int = 0, perm_seed: int = 0, colluders: frozenset[str] = frozenset()
    ) -> None:
        self.spec = spec
        self.colluders = colluders
        self.kind = spec.kind
        self.rng = random.Random(seed)
        self.seed = seed
        self.perm_seed = perm_seed
        self.sent: deque[bytes] = deque(maxlen=64)
        self.bad_envelopes_sent = 0
        self._learner: _Wrapper | None = None
        #: equivocate, slow, flood (None for the other kinds)
        self.protocol = ProtocolAttack.of(spec, seed)
        #: ``redial``: every other peer of the plan (peer id -> address), set by the runner
        self.addrs: dict[str, str] = {}
        #: ``redial``: the peers this attacker was ever linked to, and its dials that linked or were refused
        self.met: set[str] = set()
        self.redials = [0, 0]
        #: ``refresh``: peer id -> the own round its link was first seen, and the peers dropped this round
        self._since: dict[str, int] = {}
        self._dropped: set[str] = set()

    @property
    def crash_round(self) -> int | None:
        return self.spec.crash_round if self.kind == "crash" else None

    @property
    def poisons_model(self) -> bool:
        return self.kind in MODEL_ATTACKS

    def wrap_learner(self, learner: Learner) -> Learner:
        s = self.spec
        wrapped: _Wrapper | None = None
        if self.kind == "signflip":
            wrapped = SignFlip(learner, s.scale)
        elif self.kind == "gaussian":
            wrapped = Gaussian(learner, s.sigma, self.seed)
        elif self.kind == "labelflip":
            wrapped = LabelFlip(learner, s.labelflip_fraction, self.seed)
        elif self.kind == "alie":
            wrapped = ALIE(learner, s.z, s.alie_signs, self.seed)
        elif self.kind == "ipm":
            ahead = s.ipm_gate_breakers and self.seed % 2 == 1
            wrapped = IPM(learner, s.epsilon, s.ipm_evade_lag, s.ipm_lag_floor, ahead=ahead)
        elif self.kind == "labelperm":
            wrapped = LabelPerm(learner, self.perm_seed)
        elif self.kind == "honest_then_attack":
            wrapped = HonestThenAttack(learner, s.honest_rounds, s.then, s.scale, s.z)
        elif self.kind == "extreme":
            wrapped = Extreme(learner, s.extreme_value, self.seed)
        elif self.kind == "mimic":
            wrapped = Mimic(learner, s.mimic_noise, self.seed)
        elif self.kind == "dissensus":
            wrapped = Dissensus(learner, s.dissensus_lambda, s.dissensus_evade_echo, s.dissensus_from_round)
        if wrapped is None:
            return learner
        self._learner = wrapped
        return wrapped

    def wrap_transport(self, factory: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if self.protocol is not None:
            return self.protocol.wrap_transport(factory)
        if self.kind not in ("replay", "forge"):
            return factory
        sink = self.sent

        @asynccontextmanager
        async def opened(identity: Any) -> AsyncIterator[Any]:
            async with factory(identity) as t:
                yield _RecordingTransport(t, sink)

        return opened

    def bind(self, peer: Any) -> None:
        """Give omniscient wrappers a read-only view of ``peer``'s replicas, and protocol attacks the peer
        (its engine signs and serves what they forge), after the Peer is created."""
        if self.protocol is not None:
            self.protocol.bind(peer)
        if isinstance(self._learner, _Omniscient):
            engine = peer.engine

            def view() -> list[Params]:
                return [
                    {k: v.copy() for k, v in engine.layout.unflatten(r.vec).items()}
                    for r in list(engine.replicas.values())
                ]

            def keyed() -> dict[str, Params]:
                return {
                    p: {k: v.copy() for k, v in engine.layout.unflatten(r.vec).items()}
                    for p, r in list(engine.replicas.items())
                }

            self._learner.view = view
            self._learner.keyed = keyed
            self._learner.colluders = self.colluders - {peer.peer_id}

    async def before_round(self, peer: Any) -> None:
        """Called by the runner before each round (``slow`` waits here; ``refresh`` drops its old links)."""
        if self.spec.redial == "refresh":
            await self._refresh(peer)
        if self.protocol is not None:
            await self.protocol.before_round(peer)

    async def run(self, peer: Any) -> None:
        """The background behaviour (replay, forge, flood, redial); runs until cancelled."""
        if self.spec.redial != "off":
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._redial, peer)
                await self._run(peer)
        else:
            await self._run(peer)

    async def _refresh(self, peer: Any) -> None:
        """``redial = "refresh"``: drop each link held ``refresh_rounds`` rounds; it is dialled again once
        this round is over (so that the peer sees it gone when its round ends)."""
        round_, linked = peer.round, set(peer.transport.connected_peers()) & set(self.addrs)
        self._dropped.clear()
        for pid in list(self._since):
            if pid not in linked:
                del self._since[pid]
        for pid in sorted(linked - self.colluders):
            if round_ - self._since.setdefault(pid, round_) >= self.spec.refresh_rounds:
                await peer.transport.disconnect(pid)
                self._dropped.add(pid)
                del self._since[pid]

    async def _redial(self, peer: Any) -> None:
        """``[attack] redial``: dial the peers that closed this attacker's link (or every peer) again."""
        while True:
            await trio.sleep(self.spec.redial_s)
            linked = set(peer.transport.connected_peers())
            self.met |= linked & set(self.addrs)
            wanted = set(self.addrs) if self.spec.redial == "all" else self.met
            for pid in sorted(wanted - linked - self.colluders - self._dropped):
                try:
                    await peer.connect(self.addrs[pid])
                except Exception:  # refused (resting, evicted) or gone: tried again next time
                    self.redials[1] += 1
                else:
                    self.redials[0] += 1

    async def _run(self, peer: Any) -> None:
        if self.protocol is not None:
            await self.protocol.run(peer)
            return
        if self.kind not in ("replay", "forge"):
            return
        me = peer.peer_id.encode()
        while True:
            await trio.sleep(self.spec.interval_s)
            t = peer.transport
            if self.kind == "replay" and len(self.sent) >= 2:
                old = self.sent[self.rng.randrange(len(self.sent) - 1)]  # anything but the newest
                await t.broadcast(old)
                self.sent.pop()  # do not replay replays
                self.bad_envelopes_sent += 1
            elif self.kind == "forge" and self.sent:
                victims = [p for p in t.connected_peers() if len(p) == len(me.decode())]
                if not victims:
                    continue
                victim = self.rng.choice(sorted(victims)).encode()
                forged = self.sent[-1].replace(me, victim, 1)
                if forged != self.sent[-1]:
                    await t.broadcast(forged)
                    self.sent.pop()
                    self.bad_envelopes_sent += 1

    def report(self) -> dict[str, Any]:
        """What this attacker did, for the results (its kind, and what its protocol attack sent)."""
        out: dict[str, Any] = {"kind": self.kind}
        if isinstance(self._learner, HonestThenAttack):
            out["rounds_trained"] = self._learner.rounds_trained
        if isinstance(self._learner, Mimic | Dissensus) and self._learner.target is not None:
            out["target"] = self._learner.target
        p = self.protocol
        if self.spec.redial != "off":
            out["redials"], out["redials_refused"] = self.redials
        if p is not None:
            out["equivocations"] = list(p.equivocations)
            out["flood_sent"] = p.flood_sent
        return out

    @property
    def envelopes_sent(self) -> int:
        """Bad envelopes sent so far (replay, forge, equivocation twins, flood announcements)."""
        return self.bad_envelopes_sent + (self.protocol.bad_envelopes_sent if self.protocol else 0)


def make_behaviour(
    spec: AttackSpec, seed: int, perm_seed: int = 0, colluders: frozenset[str] = frozenset()
) -> Behaviour:
    return Behaviour(spec, seed, perm_seed, colluders)
