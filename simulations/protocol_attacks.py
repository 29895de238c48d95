"""Protocol attacks of issue 15, as wrappers around a real peer (never flags inside ``p2pfl``).

Each attacker runs the honest :class:`p2pfl.peer.Peer` and trains honestly; what differs is what reaches
the network. The attacker holds its own identity, so whatever it signs is *validly* signed:

* ``equivocate``: from its own round ``start_round`` on, every new version is published twice with the
  same version number: the real one to half of its neighbours and a twin (the same base, the update
  reversed: ``prev - (trained - prev)``) to the other half. Both are sealed with the peer's key; the twin's
  payload is served by the peer's engine like any published payload. Over libp2p the two halves are chosen
  in gossipsub's send set, over the memory transport by queueing at each neighbour directly; honest relays
  (libp2p) may still carry each version to the other half, which is how a receiver can meet both.
* ``slow``: the peer starts a round (so publishes a version) at most once every ``period_s`` seconds.
* ``flood``: once, at its own round ``start_round``, ``flood_count`` header-only announcements
  (``flood_sender = "self"``: fresh headers signed by its own key, each the next version with a random
  payload digest, so every one looks fetchable; ``"random"``: each signed by a fresh random identity, an
  unknown sender whose snapshot a receiver would ask for). They are prepared before the round and sent
  as a modified gossip stack would: over libp2p packed 250 per gossipsub RPC, signed like pubsub's own
  messages, without the transport's publish pacing or the library's own-publish spam limit
  (:func:`send_batched`), so the whole burst leaves within seconds.

The envelopes are built from the engine's state (its layout, public model and digest) with the public wire
API (:func:`p2pfl.wire.seal`); only the payload cache of the engine (to serve the twin) and the transports'
send paths (to choose recipients, to skip pacing) are reached through private attributes, here only.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import trio

from p2pfl.identity import Identity
from p2pfl.wire import (
    DIGEST_SIZE,
    Header,
    Meta,
    apply_codec,
    open_envelope,
    payload_parts,
    seal,
    undo_codec,
)

from .scenario import AttackSpec

PROTOCOL_KINDS = ("equivocate", "slow", "flood")
#: ``flood_sender = "self"``: the burst's versions start this far past the peer's own number
FLOOD_SEQ_GAP = 1_000_000


# ------------------------------------------------------------------------------------ send helpers


async def send_to(transport: Any, peers: list[str], data: bytes) -> None:
    """Send one announcement to ``peers`` only (a subset of the connected ones), as a modified gossip stack
    would. Memory transport: queued at each of them; libp2p: gossipsub's send set is restricted to them for
    this publish. Anything else: an ordinary broadcast."""
    inner = getattr(transport, "_inner", transport)
    if hasattr(inner, "_net") and hasattr(inner, "_inbox_send"):  # MemoryTransport
        inner._seq += 1
        inner._remember((inner.peer_id, inner._seq))
        inner._stats.messages_sent += 1
        inner._stats.bytes_sent += len(data)
        for pid in peers:
            remote = inner._net.get(pid)
            if remote is None or pid not in inner._neighbours:
                continue
            try:
                remote._inbox_send.send_nowait((inner.peer_id, inner.peer_id, inner._seq, bytes(data)))
            except trio.WouldBlock:
                remote._stats.drop("gossip_backlog_full")
        await trio.lowlevel.checkpoint()
        return
    gossipsub = getattr(inner, "_gossipsub", None)
    pubsub = getattr(inner, "_pubsub", None)
    if gossipsub is None or pubsub is None:
        await transport.broadcast(data)
        return
    wanted = {inner._parse_peer(p) for p in peers}
    me = pubsub.my_id
    original = gossipsub._get_peers_to_send

    def only(topic_ids: Any, msg_forwarder: Any, origin: Any, msg_id: Any = None) -> Any:
        for p in original(topic_ids, msg_forwarder=msg_forwarder, origin=origin, msg_id=msg_id):
            if origin != me or p in wanted:
                yield p

    gossipsub._get_peers_to_send = only
    try:
        await pubsub.publish(inner._topic, data)
    finally:
        del gossipsub._get_peers_to_send  # the class's method again
    inner._stats.messages_sent += 1
    inner._stats.bytes_sent += len(data)


async def send_batched(
    transport: Any,
    datas: list[bytes],
    *,
    per_rpc: int = 250,
    progress: Callable[[int], None] = lambda n: None,
) -> int:
    """Send ``datas`` as a modified gossip stack would, ``per_rpc`` messages packed in each RPC (the
    protocol allows any number): each message is signed as pubsub signs its own, and every RPC is queued
    to each connected subscriber of our topic once there is room (a full queue drops silently). One RPC
    per message would be limited by the receivers' per-RPC read cost (~25-60 RPCs/s per connection
    measured on 2 loaded cores), spreading the burst over minutes. Returns how many messages went out
    (memory transport: ordinary broadcasts), and tells ``progress`` the count as it goes."""
    inner = getattr(transport, "_inner", transport)
    pubsub = getattr(inner, "_pubsub", None)
    if pubsub is None:
        for i, d in enumerate(datas):
            await transport.broadcast(d)
            progress(i + 1)
        return len(datas)
    from libp2p.pubsub.pb import rpc_pb2
    from libp2p.pubsub.pubsub import PUBSUB_SIGNING_PREFIX

    topic, key = inner._topic, pubsub.sign_key
    pub = inner._host.get_public_key().serialize()
    limit = _outbound_queue_size() - 4
    sent = 0
    for lo in range(0, len(datas), per_rpc):
        rpc = rpc_pb2.RPC()
        for d in datas[lo : lo + per_rpc]:
            msg = rpc_pb2.Message(
                data=d, topicIDs=[topic], from_id=pubsub.my_id.to_bytes(), seqno=pubsub._next_seqno()
            )
            msg.signature = key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
            msg.key = pub
            rpc.publish.append(msg)
        with trio.move_on_after(2.0):
            while any(len(q) > limit for q in pubsub.peer_queues.values()):
                await trio.sleep(0.005)
        pushed = False
        for pid in list(pubsub.peer_topics.get(topic, ())):
            q = pubsub.peer_queues.get(pid)
            if q is not None and q.push(rpc):
                pushed = True
        if pushed:
            sent += len(rpc.publish)
            inner._stats.messages_sent += len(rpc.publish)
        progress(sent)
        await trio.sleep(0)
    return sent


def _outbound_queue_size() -> int:
    from p2pfl.transport.libp2p import compat

    return int(compat.OUTBOUND_QUEUE_SIZE)


# --------------------------------------------------------------------------------- what is forged


def twin_envelope(
    engine: Any, prev: np.ndarray, prev_digest: bytes, new: np.ndarray, real: Header
) -> tuple[bytes, bytes, bytes]:
    """A second version with ``real``'s number and base, the update reversed: (envelope, payload digest,
    payload). ``prev`` is the public model ``real`` was computed from (``prev_digest`` is ``real.base``),
    ``new`` the public model ``real`` announces."""
    layout, cfg = engine.layout, engine.config
    delta = (prev - new).astype(np.float32)  # the twin is prev - (new - prev)
    tensors = apply_codec(layout.unflatten(delta), cfg.codec)
    if cfg.codec != "raw":
        twin = prev + layout.flatten(undo_codec(tensors, cfg.codec, layout.unflatten(delta)))
    else:
        twin = prev + delta
    parts, pdigest, psize = payload_parts(tensors)
    header = Header(
        kind="delta",
        network_id=real.network_id,
        sender=real.sender,
        seq=real.seq,
        base=prev_digest,
        result=layout.digest(twin),
        arch=real.arch,
        payload_digest=pdigest,
        payload_size=psize,
        codec=cfg.codec,
        meta=real.meta,
        timestamp_ms=real.timestamp_ms + 1,
    )
    inline = psize <= cfg.inline_limit
    return seal(engine.identity, header, parts if inline else None), pdigest, b"".join(parts)


def flood_envelopes(engine: Any, count: int, sender: str, rng: random.Random) -> list[bytes]:
    """``count`` header-only announcements (see the module docstring); pure CPU, run it in a thread."""
    layout, cfg = engine.layout, engine.config
    size = engine._payload_sizes[cfg.codec]
    # stamped half the receivers' skew bound ahead: the freshest a flooder who knows the freshness rule
    # (p2pfl.protocol.freshness) can make its burst, so it meets the rate limits, not a cheaper refusal
    stamp = int(time.time() * 1000 + cfg.max_clock_skew_s * 500)
    out = []
    for i in range(count):
        if sender == "self":
            # each a new version, numbered past any the peer will publish itself (a number used twice
            # would be an equivocation, which gets the sender banned at once: not what a flood tests)
            ident, seq, base = engine.identity, engine.seq + FLOOD_SEQ_GAP + i, engine.public_digest
        else:
            ident, seq, base = Identity(rng.randbytes(32)), 1, rng.randbytes(DIGEST_SIZE)
        header = Header(
            kind="delta",
            network_id=cfg.network_id,
            sender=ident.peer_id,
            seq=seq,
            base=base,
            result=rng.randbytes(DIGEST_SIZE),
            arch=layout.arch,
            payload_digest=rng.randbytes(DIGEST_SIZE),
            payload_size=size,
            codec=cfg.codec,
            meta=Meta(),
            timestamp_ms=stamp,
        )
        out.append(seal(ident, header, None))
    return out


# --------------------------------------------------------------------------------------- the attack


def _version_round(header: Header, peer: Any) -> int:
    """The round of the version being published: its header's. With ``wait_before_mix`` a round publishes
    its trained model before it ends, when ``peer.round`` is still the last round done (the attack started
    a round late, and cut off by then, equivocated twice instead of three times)."""
    return header.meta.round if header.meta.round is not None else peer.round


class _EquivocatingTransport:
    """Proxy of a transport: each own delta announcement goes out as two versions (see ``equivocate``)."""

    def __init__(self, inner: Any, attack: ProtocolAttack) -> None:
        self._inner = inner
        self._attack = attack

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def broadcast(self, data: bytes) -> None:
        a = self._attack
        pending = a.take_published()
        peer = a.peer
        if pending is None or peer is None or _version_round(pending[3], peer) < a.spec.start_round:
            await self._inner.broadcast(data)
            return
        prev, prev_digest, new, header = pending
        engine = peer.engine
        twin, pdigest, payload = twin_envelope(engine, prev, prev_digest, new, header)
        engine._remember_payload(pdigest, payload)
        peers = sorted(self._inner.connected_peers())
        first, second = peers[0::2], peers[1::2]
        await send_to(self._inner, first, data)
        await send_to(self._inner, second, twin)
        a.bad_envelopes_sent += 1
        a.equivocations.append(header.seq)


class ProtocolAttack:
    """``equivocate``, ``slow`` or ``flood`` for one attacker (see the module docstring)."""

    def __init__(self, spec: AttackSpec, seed: int) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.rng = random.Random(seed)
        self.peer: Any = None
        self.bad_envelopes_sent = 0
        #: equivocate: the version numbers published twice
        self.equivocations: list[int] = []
        #: flood: the burst's own rounds and seconds since ``t0`` (first, last) and size
        self.flood_sent: dict[str, Any] | None = None
        #: the run's start (``time.time()``), set by the runner: the burst's times are relative to it
        self.t0 = 0.0
        self._published: tuple[np.ndarray, bytes, np.ndarray, Header] | None = None
        self._last_round_at: float | None = None

    @classmethod
    def of(cls, spec: AttackSpec, seed: int) -> ProtocolAttack | None:
        return cls(spec, seed) if spec.kind in PROTOCOL_KINDS else None

    def wrap_transport(self, factory: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if self.kind != "equivocate":
            return factory

        @asynccontextmanager
        async def opened(identity: Any) -> AsyncIterator[Any]:
            async with factory(identity) as t:
                yield _EquivocatingTransport(t, self)

        return opened

    def bind(self, peer: Any) -> None:
        """Remember the peer; for ``equivocate``, record each version's base as the engine publishes it."""
        self.peer = peer
        if self.kind != "equivocate":
            return
        engine = peer.engine
        publish = engine._publish

        def recording(model: Any, meta: Any, timestamp_ms: int, *rest: Any) -> Any:
            prev, prev_digest = engine.public.copy(), engine.public_digest
            out = publish(model, meta, timestamp_ms, *rest)
            header = open_envelope(out.envelope).header
            self._published = (prev, prev_digest, engine.public.copy(), header)
            return out

        engine._publish = recording

    def take_published(self) -> tuple[np.ndarray, bytes, np.ndarray, Header] | None:
        out, self._published = self._published, None
        return out

    async def before_round(self, peer: Any) -> None:
        if self.kind != "slow":
            return
        now = trio.current_time()
        if self._last_round_at is not None:
            await trio.sleep_until(self._last_round_at + self.spec.period_s)
        self._last_round_at = max(now, trio.current_time())

    async def run(self, peer: Any) -> None:
        """``flood``: prepare the burst (signing 10,000 fresh identities takes seconds), wait for the own
        round ``start_round``, send it, then idle."""
        if self.kind != "flood":
            return
        rng = random.Random(self.rng.random())
        # on a mock clock inline: a thread's real time would let the simulated rounds run on meanwhile, and
        # the burst would start at a round the machine's load picks (p2pfl.sim.determinism)
        from .determinism import mock_clock_running  # not at import: determinism imports the runner

        run_sync: Any = _call if mock_clock_running() else trio.to_thread.run_sync
        spec = self.spec
        envelopes = await run_sync(flood_envelopes, peer.engine, spec.flood_count, spec.flood_sender, rng)
        for _ in range(10_000_000):
            if peer.round >= self.spec.start_round:
                break
            await trio.sleep(0.05)
        first = peer.round
        t = peer.transport
        began = round(time.time() - self.t0, 3)
        # kept up to date while sending: a run that ends mid-burst reports what was sent
        sent = self.flood_sent = {"rounds": [first, first], "t": [began, began], "count": 0}
        before = self.bad_envelopes_sent

        def progress(count: int) -> None:
            sent["count"] = count
            sent["rounds"][1] = peer.round
            sent["t"][1] = round(time.time() - self.t0, 3)
            self.bad_envelopes_sent = before + count  # the same figure, for a run that ends mid-burst

        await send_batched(t, envelopes, progress=progress)
        self.bad_envelopes_sent = before + len(envelopes)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on the loop's thread (the flood's preparation on a mock clock)."""
    return fn(*args)
